"""method="hybrid": FISTA, and Newton's method or L-BFGS wherever every block has full rank (the
nuclear norm is smooth there). The same optimum as CVXPY and FISTA, the subspace and the
Newton system it works with, and the hand-over in both directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cvxattn as ca
from cvxattn.solvers import smooth
from cvxattn.solvers.smooth import smooth_basis
from tests.helpers import C, D, S, TEN, TEN_IDS, labels, tokens

N = 8


def _problem(head, seed=0, beta=0.05, n=N, **kwargs):
    return ca.Problem(head, tokens(seed, n=n, s=S, d=D), labels(seed, n=n, c=C), beta, **kwargs)


@pytest.mark.parametrize("name,head", TEN, ids=TEN_IDS)
def test_class_columns_says_when_a_shift_of_a_blocks_class_columns_is_invisible(name, head):
    """Adding v ⊗ 1_c to a block's columns (class the inner axis) moves every output row by a
    constant exactly when the head says ``class_columns``; cross-entropy cannot see it."""
    problem = _problem(head)
    G, p, q = problem.head.n_blocks, *problem.head.block_shape
    rng = np.random.default_rng(0)
    Z = torch.as_tensor(rng.normal(size=(G, p, q)))
    groups = q // C if q % C == 0 else q
    v = torch.as_tensor(rng.normal(size=(G, p, groups)))
    shifted = Z + (v.repeat_interleave(C, -1) if q % C == 0 else v)
    moved = problem.outputs(shifted) - problem.outputs(Z)
    constant = torch.allclose(moved, moved.mean(-1, keepdim=True).expand_as(moved),
                              atol=1e-12, rtol=0)
    assert constant == problem.head.class_columns
    assert problem.head.class_columns == (not name.startswith("bfno"))


@pytest.mark.parametrize("name,head", [TEN[0], TEN[2], TEN[4]], ids=[TEN_IDS[i] for i in (0, 2, 4)])
def test_smooth_basis_spans_the_columns_the_optimum_lives_in(name, head):
    problem = _problem(head)
    q = problem.head.block_shape[1]
    B = smooth_basis(problem)
    assert torch.allclose(B.T @ B, torch.eye(B.shape[1], dtype=B.dtype), atol=1e-12)
    if problem.head.class_columns:
        assert B.shape == (q, q - q // C)
        constants = torch.kron(torch.eye(q // C, dtype=B.dtype), torch.ones(C, 1, dtype=B.dtype))
        assert torch.allclose(constants.T @ B, torch.zeros(q // C, B.shape[1], dtype=B.dtype),
                              atol=1e-12)
    else:
        assert torch.equal(B, torch.eye(q, dtype=B.dtype))
    squared = ca.Problem(problem.head, problem.X, torch.randn(N, C, dtype=torch.float64), 0.05,
                         loss="squared")
    assert torch.equal(smooth_basis(squared), torch.eye(q, dtype=B.dtype))


@pytest.mark.parametrize("name,head", TEN, ids=TEN_IDS)
def test_lbfgs_reaches_the_fista_optimum_on_every_program(name, head):
    """At a small β (full-rank optima, where L-BFGS may take over) and a larger one."""
    for beta in (2e-3, 0.05):
        problem = _problem(head, seed=1, beta=beta, n=60)
        sol = ca.solve(problem, method="hybrid", tol=1e-8, max_iter=20_000)
        ref = ca.solve(problem, method="fista", tol=1e-8, max_iter=20_000)
        assert sol.status == "optimal" and sol.gap <= 1e-8
        assert sol.objective == pytest.approx(ref.objective, rel=2e-8)
        assert sol.lower_bound <= ref.objective * (1 + 1e-12)
        cert = ca.certify(problem, sol.blocks, sol.intercept)
        assert cert.objective == pytest.approx(sol.objective, rel=1e-12)


def test_lbfgs_agrees_with_cvxpy():
    problem = _problem(ca.heads.MLP(), seed=2, beta=0.01)
    sol = ca.solve(problem, method="hybrid", tol=1e-9, max_iter=20_000)
    assert sol.objective == pytest.approx(ca.solve(problem, method="cvxpy").objective, rel=1e-6)


def _ill_conditioned(beta, n=300, s=4, d=8, c=4):
    """Features on scales from 1 to 0.03 and labels drawn from a strong planted model: a
    small-β logistic regression whose optimum has full rank and whose loss is badly
    conditioned, like mean tokens of a backbone."""
    rng = np.random.default_rng(0)
    scale = np.logspace(0, -1.5, d)
    X = rng.normal(size=(n, s, d)) * scale
    logits = X.mean(1) @ (rng.normal(size=(d, c)) * 3 / scale[:, None])
    prob = np.exp(logits - logits.max(1, keepdims=True))
    y = np.array([rng.choice(c, p=row / row.sum()) for row in prob])
    return ca.Problem(ca.heads.MLP(), X, y, beta=beta)


def test_where_fista_is_slow_newton_takes_over_in_a_few_steps():
    problem = _ill_conditioned(1e-4)
    start = ca.solve(problem.with_beta(1e-3), method="fista", tol=1e-6, max_iter=20_000)
    fista = ca.solve(problem, method="fista", tol=1e-6, max_iter=50_000, init=start)
    seen = []  # FISTA stalls at tol 1e-10 (the gap waits for the dual point); Newton does not
    newton = ca.solve(problem, method="hybrid", tol=1e-10, max_iter=50_000, init=start,
                      callback=seen.append)
    assert newton.method == "newton" and newton.status == "optimal"
    assert fista.lower_bound <= newton.objective <= fista.objective
    assert newton.n_iter <= 20 < fista.n_iter  # from a full-rank start: Newton steps only
    assert tuple(seen) == newton.history
    iterations = [h.iteration for h in newton.history]
    assert iterations == sorted(iterations) and iterations[-1] == newton.n_iter


def test_where_fista_is_slow_lbfgs_takes_over_and_needs_fewer_iterations(monkeypatch):
    monkeypatch.setattr(smooth, "NEWTON_SIZE", 0)  # the system too large to form: L-BFGS
    problem = _ill_conditioned(1e-3)
    start = ca.solve(problem.with_beta(1e-2), method="fista", tol=1e-6, max_iter=20_000)
    fista = ca.solve(problem, method="fista", tol=1e-5, max_iter=20_000, init=start)
    seen = []
    lbfgs = ca.solve(problem, method="hybrid", tol=1e-5, max_iter=20_000, init=start,
                     callback=seen.append)
    assert lbfgs.method == "lbfgs" and lbfgs.status == "optimal"
    assert abs(lbfgs.objective - fista.objective) <= 1e-5 * fista.objective
    assert lbfgs.n_iter < 0.6 * fista.n_iter
    assert tuple(seen) == lbfgs.history
    iterations = [h.iteration for h in lbfgs.history]
    assert iterations == sorted(iterations) and iterations[-1] == lbfgs.n_iter


@pytest.mark.parametrize("beta,tol", [(1e-4, 1e-5), (1e-4, 1e-6), (1e-3, 1e-6)])
def test_where_lbfgs_is_no_faster_it_hands_back_to_fista(monkeypatch, beta, tol):
    """Tight tolerances, where the gap waits for the dual point: L-BFGS's rate is watched
    against FISTA's, so the hybrid never takes much longer than FISTA alone."""
    monkeypatch.setattr(smooth, "NEWTON_SIZE", 0)
    problem = _ill_conditioned(beta)
    start = ca.solve(problem.with_beta(10 * beta), method="fista", tol=1e-6, max_iter=50_000)
    fista = ca.solve(problem, method="fista", tol=tol, max_iter=50_000, init=start)
    lbfgs = ca.solve(problem, method="hybrid", tol=tol, max_iter=50_000, init=start)
    assert lbfgs.status == fista.status == "optimal"
    assert lbfgs.n_iter <= 1.25 * fista.n_iter + 100


def test_a_rank_deficient_optimum_is_handed_back_to_fista():
    """From a full-rank start L-BFGS begins, the blocks head for the optimum's lower rank, and
    FISTA finishes; still the certified optimum."""
    problem = _problem(ca.heads.MLP(), seed=4, beta=0.2, n=40)
    ref = ca.solve(problem, method="fista", tol=1e-9, max_iter=20_000)
    assert int(ref.ranks.max()) < min(D, C - 1)  # rank deficient
    Z0 = torch.as_tensor(np.random.default_rng(0).normal(size=(1, D, C)))
    seen = []
    sol = ca.solve(problem, method="hybrid", tol=1e-9, max_iter=20_000,
                   init=(Z0, torch.zeros(C, dtype=torch.float64)), callback=seen.append)
    assert sol.status == "optimal" and tuple(seen) == sol.history
    assert sol.objective == pytest.approx(ref.objective, rel=1e-8)
    assert sol.ranks.tolist() == ref.ranks.tolist()


def test_float32_lbfgs_is_finished_in_float64():
    problem = _problem(ca.heads.MLP(), seed=0, beta=0.01, dtype=torch.float32)
    sol = ca.solve(problem, method="hybrid", tol=1e-7, max_iter=20_000)
    assert sol.status == "optimal" and sol.blocks.dtype == torch.float64
    assert "then float64" in str(sol.certificate)


def test_auto_plans_the_hybrid_for_small_dense_blocks():
    problem = _problem(ca.heads.MLP())
    assert ca.solvers.plan(problem).method == "hybrid"
    assert ca.solvers.plan(problem, "fista").method == "fista"
    assert ca.solvers.plan(problem, "hybrid").method == "hybrid"


@pytest.mark.parametrize("name,head,loss", [
    ("mlp-linear", TEN[0][1], "cross_entropy"), ("mlp-gated", TEN[5][1], "cross_entropy"),
    ("attention-gated", TEN[6][1], "cross_entropy"), ("fno-gated", TEN[8][1], "squared"),
    ("mlp-linear", TEN[0][1], "squared")])
def test_the_newton_system_is_the_hessian_of_the_objective(name, head, loss):
    """Value, gradient and Hessian of F(M, β_b) assembled from the design equal autograd's
    on the same function (every head with a product design, both losses)."""
    from torch.autograd.functional import hessian

    n = 30
    y = labels(0, n=n, c=C) if loss == "cross_entropy" else \
        torch.as_tensor(np.random.default_rng(1).normal(size=(n, C)))
    problem = ca.Problem(head, tokens(0, n=n, s=S, d=D), y, beta=0.1, loss=loss)
    B = smooth_basis(problem)
    G, p, q = problem.head.n_blocks, *problem.head.block_shape
    k = B.shape[1] * C // q
    Bc = B[:C, :k]
    rng = np.random.default_rng(2)
    Z = torch.as_tensor(rng.normal(size=(G, p, q))) @ B @ B.T
    bias = Bc @ torch.as_tensor(rng.normal(size=k))
    value, g, H, _ = smooth._newton_system(problem, problem.head.pooled_design(problem.data),
                                           Z, bias, B)
    size = G * p * B.shape[1]

    def objective(x):
        M = x[:size].reshape(G, p, B.shape[1])
        outputs = problem.centered(problem.outputs(M @ B.T)) + Bc @ x[size:]
        return problem.loss.value(outputs, problem.y) + 0.1 * torch.linalg.svdvals(M).sum()

    x = torch.cat([(Z @ B).reshape(-1), Bc.T @ bias])
    leaf = x.clone().requires_grad_(True)
    reference = objective(leaf)
    (gradient,) = torch.autograd.grad(reference, leaf)
    assert value == pytest.approx(float(reference.detach()), rel=1e-13)
    torch.testing.assert_close(g, gradient, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H, hessian(objective, x), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
def test_the_nuclear_norms_hessian_against_finite_differences(shape):
    M = torch.as_tensor(np.random.default_rng(0).normal(size=shape))
    E = torch.as_tensor(np.random.default_rng(1).normal(size=shape))

    def gradient(M):
        U, _, Vh = torch.linalg.svd(M, full_matrices=False)
        return (U @ Vh).reshape(-1)

    H = smooth._nuclear_hessian(M)
    h = 1e-6
    numeric = (gradient(M + h * E) - gradient(M - h * E)) / (2 * h)
    torch.testing.assert_close(H @ E.reshape(-1), numeric, rtol=0, atol=1e-8)
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-14)


def test_a_block_that_shrinks_to_zero_is_handed_back_to_fista():
    """Two classes and gate blocks of one column: every nonzero block has "full rank", but at
    the optimum two of the three are zero. Newton must notice (a block small against the
    largest, or a gap that stops halving) and hand back, not crawl to max_iter. The tokens are
    the fit split of the table test's toy backbone tokens, standardized, where it crawled."""
    from cvxattn.digits import stratified_subset
    from tests.test_table import Backbone, Images

    images = Images(40, 0, "train")
    X, y = Backbone().tokens(images.images), images.labels
    flat = X.reshape(-1, X.shape[2]).astype(np.float64)
    X = ((X - flat.mean(0)) / flat.std(0)).astype(np.float32)
    fit = ~np.isin(np.arange(40), stratified_subset(np.arange(40), y, 8, 2))
    X, y = X[fit], y[fit]
    problem = ca.Problem(ca.heads.MLP(activation="gated", n_gates=3, seed=0), X, y, beta=0.01)
    ref = ca.solve(problem, method="fista", tol=1e-6, max_iter=20_000)
    assert (ref.ranks == 0).any()
    sol = ca.solve(problem, method="hybrid", tol=1e-6, max_iter=5000)
    assert sol.status == "optimal"
    assert abs(sol.objective - ref.objective) <= 2e-6 * ref.objective
    assert sol.ranks.tolist() == ref.ranks.tolist()
    assert sol.n_iter <= ref.n_iter + 300
