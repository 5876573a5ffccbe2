"""FISTA against the CVXPY reference on all ten programs, and the truth of its certificate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cvxattn as ca
from tests.helpers import labels, ten_heads, tokens

# small enough for CVXPY's SDP on every head (the Mixer's block is s² × dc)
N, GRID, D, C = 8, (1, 3), 4, 6
S = GRID[0] * GRID[1]
HEADS = ten_heads(grid=GRID)
BETA = 0.05


def problem(head, seed, **kwargs):
    X = tokens(seed, n=N, s=S, d=D)
    return ca.Problem(head, X, labels(seed, n=N, c=C), BETA, **kwargs)


@pytest.fixture(scope="module")
def references():
    """CVXPY optima, computed once per (head, seed)."""
    return {}


def reference(references, name, head, seed, **kwargs):
    key = (name, seed, tuple(sorted(kwargs.items())))
    if key not in references:
        references[key] = ca.solve(problem(head, seed, **kwargs), method="cvxpy")
    return references[key]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name,head", HEADS, ids=[n for n, _ in HEADS])
def test_fista_reaches_the_cvxpy_optimum(references, name, head, seed):
    tol = 1e-8  # P − P* ≤ tol · P, so the objective matches the reference to ~1e-8
    prob = problem(head, seed)
    sol = ca.solve(prob, method="fista", tol=tol, max_iter=20_000)
    ref = reference(references, name, head, seed)
    assert sol.status == "optimal" and sol.method == "fista"
    assert sol.objective == pytest.approx(ref.objective, rel=1e-6)
    # the reported gap is what its two bounds say, and within tol ...
    assert sol.gap <= tol
    assert sol.gap == pytest.approx((sol.objective - sol.lower_bound) / sol.objective)
    # ... the objective is that of the returned point (the best dual value may come from an
    # earlier check, so a fresh certificate's own bound is no higher) ...
    cert = ca.certify(prob, sol.blocks, sol.intercept)
    assert cert.objective == pytest.approx(sol.objective, rel=1e-12)
    # (to rounding: a pooled collapse proves the same bound on the smaller program)
    assert cert.lower_bound <= sol.lower_bound + 1e-14 * abs(sol.lower_bound)
    # ... and the lower bound lies below every primal value, the reference's included
    assert sol.lower_bound <= ref.objective * (1 + 1e-9)


@pytest.mark.parametrize("name,head", HEADS, ids=[n for n, _ in HEADS])
def test_gap_bounds_the_suboptimality_of_an_early_stopped_run(references, name, head):
    with pytest.warns(ca.ConvergenceWarning, match="relative duality gap"):
        early = ca.solve(problem(head, 0), tol=1e-12, max_iter=3)
    assert early.status == "max_iter" and early.n_iter == 3
    optimum = ca.solve(problem(head, 0), tol=1e-10).objective
    suboptimality = (early.objective - optimum) / early.objective
    assert suboptimality > 0
    assert early.gap >= suboptimality
    assert early.lower_bound <= optimum


@pytest.mark.parametrize("name,head", HEADS, ids=[n for n, _ in HEADS])
def test_to_network_reproduces_outputs_and_objective(name, head):
    prob = problem(head, 1)
    sol = ca.solve(prob, tol=1e-9)
    net = sol.to_network()
    X_new = tokens(50, n=5, s=S, d=D)
    with torch.no_grad():
        torch.testing.assert_close(net(X_new), sol.decision_function(X_new), atol=1e-8, rtol=0)
        logits = net(prob.X)
        objective = prob.loss.value(logits, prob.y) + sol.beta * net.weight_decay()
    assert float(objective) == pytest.approx(sol.objective, rel=0, abs=1e-8)
    assert net.W1.shape[:2] == (sol.head.n_blocks, int(sol.ranks.max()))
    assert sol.n_heads == int(sol.ranks.sum()) >= 1


@pytest.mark.parametrize("name,head", [HEADS[1], HEADS[5], HEADS[8]],
                         ids=[HEADS[i][0] for i in (1, 5, 8)])
@pytest.mark.parametrize("targets", ["pooled", "tokens"])
def test_squared_loss_matches_cvxpy(references, name, head, targets):
    rng = np.random.default_rng(3)
    shape = (N, 3) if targets == "pooled" else (N, S, 3)
    X, Y = tokens(3, n=N, s=S, d=D), rng.normal(size=shape)
    prob = ca.Problem(head, X, Y, BETA, loss="squared")
    # P − P* ≤ 5e-7 P (linear attention's gap stalls near 1.2e-7 in float64 on these 8 samples)
    sol = ca.solve(prob, tol=5e-7, max_iter=20_000)
    ref = ca.solve(prob, method="cvxpy")
    assert sol.objective == pytest.approx(ref.objective, rel=1e-6)
    assert sol.decision_function(X).shape == shape


@pytest.mark.parametrize("name,head", [HEADS[0], HEADS[6]], ids=[HEADS[0][0], HEADS[6][0]])
def test_without_intercept_matches_cvxpy(name, head):
    prob = problem(head, 4, fit_intercept=False)
    sol = ca.solve(prob, tol=1e-9)
    assert torch.all(sol.intercept == 0)
    assert sol.objective == pytest.approx(ca.solve(prob, method="cvxpy").objective, rel=1e-6)


def test_warm_start_from_a_neighbouring_beta_starts_closer():
    head = HEADS[1][1]  # linear attention
    X, y = tokens(5, n=N, s=S, d=D), labels(5, n=N, c=C)
    cold = ca.solve(ca.Problem(head, X, y, 0.05), tol=1e-9)
    warm_problem = ca.Problem(head, X, y, 0.045)
    warm = ca.solve(warm_problem, tol=1e-9, init=cold)
    fresh = ca.solve(warm_problem, tol=1e-9)
    assert warm.objective == pytest.approx(fresh.objective, rel=1e-8)
    assert warm.history[0].gap < 1e-2 * fresh.history[0].gap


def test_zero_is_certified_optimal_when_beta_is_large():
    sol = ca.solve(problem(HEADS[0][1], 0).__class__(
        HEADS[0][1], tokens(0, n=N, s=S, d=D), labels(0, n=N, c=C), beta=1e3))
    assert sol.n_iter == 0 and sol.n_heads == 0 and sol.gap <= 1e-6


def test_history_records_every_check():
    sol = ca.solve(problem(HEADS[2][1], 0), tol=1e-8)
    iterations = [h.iteration for h in sol.history]
    assert iterations[0] == 0 and iterations[-1] == sol.n_iter
    lower = [h.lower_bound for h in sol.history]
    assert lower == sorted(lower)  # the best lower bound never decreases
    assert sol.history[-1].gap == sol.gap


def test_a_gap_at_the_floating_point_limit_stops_as_stalled():
    """On this problem the gap stops near 3e-8 (float64) while the objective is exact: the run
    stops after the patience window instead of spending max_iter, and still tells the truth."""
    prob = ca.Problem(ca.heads.MLP(), tokens(0, n=N, s=S, d=D), labels(0, n=N, c=C), beta=0.01)
    with pytest.warns(ca.ConvergenceWarning, match="stalled"):
        sol = ca.solve(prob, tol=1e-12, max_iter=20_000)
    assert sol.status == "stalled" and sol.n_iter < 2000
    assert 1e-12 < sol.gap < 1e-6
    reference = ca.solve(prob, method="cvxpy")
    assert sol.lower_bound <= reference.objective


def test_a_float32_run_that_stalls_is_finished_in_float64():
    """float32 stalls far above this tol; the run goes on in float64 from where it stopped and
    certifies the float64 optimum, within one iteration limit and one history."""
    X, y = tokens(0, n=N, s=S, d=D), labels(0, n=N, c=C)
    single = ca.Problem(ca.heads.MLP(), X, y, beta=0.01, dtype=torch.float32)
    seen = []
    sol = ca.solve(single, method="fista", tol=1e-6, max_iter=20_000, callback=seen.append)
    assert sol.status == "optimal" and sol.gap <= 1e-6
    assert "then float64" in str(sol.certificate) and sol.blocks.dtype == torch.float64
    assert sol.certificate.norms == "exact SVD" and sol.certificate.exact
    assert tuple(seen) == sol.history  # the callback saw both runs, counted as one
    assert all(h.estimated_gap is None for h in sol.history)  # every FISTA gap is proven
    iterations = [h.iteration for h in sol.history]
    assert iterations == sorted(iterations) and iterations[-1] == sol.n_iter
    reference = ca.solve(ca.Problem(ca.heads.MLP(), X, y, beta=0.01), tol=1e-6)
    assert sol.objective == pytest.approx(reference.objective, rel=2e-6)
    with pytest.warns(ca.ConvergenceWarning, match="stopped after"):  # the limit still holds
        short = ca.solve(single, method="fista", tol=1e-6, max_iter=50)
    assert short.n_iter <= 50


def test_an_offset_in_the_tokens_costs_no_iterations():
    """A constant offset in every token moves the linear MLP's outputs by a constant that the
    intercept absorbs: the same program. FISTA's centered coordinates make it the same run too
    (uncentered, the offset couples Z with b and multiplies the iterations)."""
    X, y = tokens(4, n=60, s=S, d=D), labels(4, n=60, c=C)
    runs = [ca.solve(ca.Problem(ca.heads.MLP(), X + offset, y, beta=1e-3), method="fista",
                     tol=1e-8, max_iter=20000) for offset in (0.0, 5.0)]
    assert all(r.status == "optimal" for r in runs)
    assert runs[1].objective == pytest.approx(runs[0].objective, rel=1e-7)
    assert runs[1].n_iter <= 1.5 * runs[0].n_iter + 20
