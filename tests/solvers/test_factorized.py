"""The factorized (Burer–Monteiro) solver: same optimum as FISTA and CVXPY on all ten programs,
a certificate that bounds the true suboptimality, rank growth to the optimum's rank, float32
with a float64 finish, chunked passes, and determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import cvxattn as ca
from cvxattn.solvers.factorized import factorized
from tests.helpers import labels, ten_heads, tokens

N, GRID, D, C = 8, (1, 3), 4, 6  # small enough for CVXPY on every head
S = GRID[0] * GRID[1]
HEADS = ten_heads(grid=GRID)
BETA = 0.05


def problem(head, seed=0, n=N, **kwargs):
    return ca.Problem(head, tokens(seed, n=n, s=S, d=D), labels(seed, n=n, c=C), BETA, **kwargs)


@pytest.mark.parametrize("name,head", HEADS, ids=[n for n, _ in HEADS])
def test_factorized_fista_and_cvxpy_agree(name, head):
    prob = problem(head)
    fact = ca.solve(prob, method="factorized", tol=1e-7)
    fista = ca.solve(prob, method="fista", tol=1e-8, max_iter=20_000)
    ref = ca.solve(prob, method="cvxpy")
    assert fact.status == "optimal" and fact.gap <= 1e-7
    assert fact.heads is not None and fact.method == "factorized"
    for other in (fista, ref):
        assert abs(fact.objective - other.objective) <= 1e-6 * abs(other.objective)
    # the certified lower bound never passes the reference optimum
    assert fact.lower_bound <= ref.objective + 1e-7 * abs(ref.objective)
    # the returned heads are the network: same outputs as the blocks they form
    torch.testing.assert_close(fact.decision_function(prob.X),
                               prob.outputs(fact.blocks) + fact.intercept, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name,head", HEADS[:5], ids=[n for n, _ in HEADS[:5]])
def test_early_certificate_bounds_the_true_suboptimality(name, head):
    prob = problem(head, seed=1)
    optimum = ca.solve(prob, method="fista", tol=1e-10, max_iter=20_000).objective
    stopped = r"factorized solver \(L-BFGS\) stopped after 3 iterations"
    with pytest.warns(ca.ConvergenceWarning, match=stopped):
        early = ca.solve(prob, method="factorized", tol=1e-12, max_iter=3)
    assert early.status == "max_iter" and early.n_iter == 3
    assert early.objective - optimum <= early.gap * abs(early.objective) + 1e-12
    assert early.lower_bound <= optimum + 1e-10


def test_rank_growth_finds_the_rank_of_the_fista_solution():
    # linear attention: one 16 × 24 block whose optimal rank is well inside (0, 16)
    prob = ca.Problem(ca.heads.SelfAttention(), tokens(3, n=40, s=5, d=4),
                      labels(3, n=40, c=6), beta=0.02)
    fista = ca.solve(prob, method="fista", tol=1e-10, max_iter=50_000)
    fact = ca.solve(prob, method="factorized", tol=1e-7)
    rank = int(fista.ranks[0])
    assert 1 < rank < 16
    assert fact.n_heads == fista.n_heads == rank
    # gated: every block's rank
    gated = ca.Problem(ca.heads.MLP(activation="gated", n_gates=4, seed=2), tokens(4, n=40, s=5),
                       labels(4, n=40, c=6), beta=0.01)
    fista = ca.solve(gated, method="fista", tol=1e-10, max_iter=50_000)
    fact = ca.solve(gated, method="factorized", tol=1e-7)
    assert fact.ranks.tolist() == fista.ranks.tolist()


def test_lanczos_certificate_on_blocks_too_large_to_apply_to_the_identity():
    # block 100 × 70: the spectral norms come from block Lanczos (the side N = 70 > 64)
    rng = np.random.default_rng(0)
    prob = ca.Problem(ca.heads.SelfAttention(), rng.normal(size=(60, 9, 10)),
                      np.arange(60) % 7, beta=0.02)
    sol = ca.solve(prob, method="factorized", tol=1e-6)
    ref = ca.solve(prob, method="fista", tol=1e-8, max_iter=20_000)
    assert sol.status == "optimal" and "Lanczos" in str(sol.certificate)
    # pooled linear attention applies its gradient blocks in closed form
    assert sol.certificate.norms == "block Lanczos via closed-form gradient products"
    assert sol.certificate.steps
    assert abs(sol.objective - ref.objective) <= 1e-6 * ref.objective
    assert sol.lower_bound <= ref.objective


def test_lanczos_through_probe_heads_where_no_closed_form_applies():
    # token-level targets: the factorized solver differentiates the network with probe heads
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 6, 4))
    prob = ca.Problem(ca.heads.SelfAttention(), X, rng.normal(size=(20, 6, 3)), beta=0.1,
                      loss="squared")
    sol = ca.solve(prob, method="factorized", tol=1e-6)
    ref = ca.solve(prob, method="fista", tol=1e-8, max_iter=20_000)
    assert sol.status == "optimal"
    assert sol.certificate.norms == "block Lanczos via probe heads"
    assert abs(sol.objective - ref.objective) <= 1e-6 * abs(ref.objective)


def test_same_seed_same_result_and_chunks_do_not_change_it():
    prob = problem(ca.heads.Mixer(activation="gated", n_gates=2, seed=1), n=24)
    first = factorized(prob, tol=1e-7, seed=3)
    again = factorized(prob, tol=1e-7, seed=3)
    assert first.objective == again.objective and first.n_iter == again.n_iter
    for a, b in zip(first.heads, again.heads):
        assert torch.equal(a, b)
    chunked = factorized(prob, tol=1e-7, seed=3, chunk_size=5, cache=False)
    assert abs(chunked.objective - first.objective) <= 1e-7 * first.objective


def test_float32_tokens_are_certified_with_a_float64_finish():
    rng = np.random.default_rng(5)
    prob = ca.Problem(ca.heads.MLP(), rng.normal(size=(300, 6, 5)), np.arange(300) % 3,
                      beta=1e-3, dtype=torch.float32)
    seen = []
    sol = ca.solve(prob, method="factorized", tol=1e-6, callback=seen.append)
    assert tuple(seen) == sol.history  # every checkpoint, the float64 finish's included
    # the Lanczos estimate of the gap comes with every check, proven bound or not
    assert all(math.isfinite(h.estimated_gap) and h.estimated_gap >= 0 for h in sol.history)
    ref = ca.solve(ca.Problem(ca.heads.MLP(), prob.X.double(), prob.y, beta=1e-3),
                   method="fista", tol=1e-9, max_iter=50_000)
    assert sol.status == "optimal"
    assert abs(sol.objective - ref.objective) <= 1e-6 * ref.objective
    # tol 1e-6 is below what float32 can prove: the certificate is float64's (the one policy
    # of every solver, cvxattn.solvers.solution.finish_in_float64)
    assert sol.certificate.precision.endswith("then float64")
    assert sol.heads[0].dtype == torch.float64


def test_float32_claims_below_its_trust_are_proven_in_float64():
    rng = np.random.default_rng(6)
    prob = ca.Problem(ca.heads.MLP(), rng.normal(size=(200, 6, 5)), np.arange(200) % 3,
                      beta=1e-2, dtype=torch.float32)
    loose = ca.solve(prob, method="factorized", tol=1e-4)  # float32 may prove 1e-4 itself
    assert loose.status == "optimal" and loose.certificate.precision is None
    tight = ca.solve(prob, method="factorized", tol=2e-6)
    assert tight.status == "optimal" and "then float64" in tight.certificate.precision


def test_warm_start_from_a_solution():
    prob = problem(HEADS[6][1])  # gated attention
    cold = ca.solve(prob, method="factorized", tol=1e-7)
    nearby = ca.Problem(prob.head, prob.X, prob.y, beta=BETA * 1.1)
    warm = ca.solve(nearby, method="factorized", tol=1e-7, init=cold)
    assert warm.status == "optimal"
    fista = ca.solve(nearby, method="fista", tol=1e-9, max_iter=20_000, init=cold)
    assert abs(warm.objective - fista.objective) <= 1e-6 * fista.objective


def test_zero_solution_has_no_heads_and_zero_blocks():
    prob = ca.Problem(ca.heads.MLP(), tokens(0, n=N, s=S, d=D), labels(0, n=N, c=C), beta=10.0)
    sol = ca.solve(prob, method="factorized", tol=1e-7)
    assert sol.n_heads == 0 and float(sol.blocks.abs().max()) == 0.0
    assert sol.to_network().W1.shape[1] == 1  # one zero head per block, as from dense Z = 0
    assert math.isfinite(sol.lower_bound)


def test_warm_start_from_heads_of_another_shape_is_refused():
    sol = ca.solve(problem(ca.heads.MLP()), method="factorized", tol=1e-6)
    other = ca.Problem(ca.heads.MLP(), tokens(0, n=N, s=S, d=D + 1), labels(0, n=N, c=C), BETA)
    with pytest.raises(ValueError, match="init: expected heads"):
        ca.solve(other, method="factorized", init=sol)


def test_a_callback_that_is_not_callable_is_refused_by_name():
    with pytest.raises(TypeError, match="callback"):
        ca.solve(problem(ca.heads.MLP()), callback="print")
