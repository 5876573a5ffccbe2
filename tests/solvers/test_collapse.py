"""Pooled collapses (SPEC.md §3 identity 3) used by the solver: the linear FNO and B-FNO are
solved as block linear models of the mean token at β/√s, and the result is the full
program's solution with the full program's certificate."""

from __future__ import annotations

import pytest
import torch

import cvxattn as ca
from tests.helpers import C, GRID, S, labels, tokens


@pytest.mark.parametrize("head", [ca.heads.FNO(grid=GRID), ca.heads.BlockFNO(groups=2,
                                                                             grid=GRID),
                                  ca.heads.Mixer()],
                         ids=["fno", "bfno", "mixer"])
def test_the_collapsed_solve_is_the_full_programs_optimum_and_certificate(head):
    problem = ca.Problem(head, tokens(0), labels(0), beta=0.05)
    solution = ca.solve(problem, tol=1e-9)
    assert solution.certificate.collapse and "√s" in str(solution.certificate)
    assert solution.dense is None  # heads of the full head, Z formed on demand
    Z = solution.blocks  # FNO (G, s·d/B, c/B): the same kernel at every shift;
    G, rows, cols = Z.shape  # Mixer (1, s², d·c): the same token weights for every query
    repeated = Z.reshape(G, S, rows // S, cols)
    torch.testing.assert_close(repeated, repeated[:, :1].expand_as(repeated), atol=1e-14,
                               rtol=0)
    # at that point, the full program's own certificate is the collapsed program's, to
    # rounding: same objective, same dual bound
    cert = ca.certify(problem, Z, solution.intercept)
    small, collapse = problem.collapsed()
    assert ca.solvers.plan(problem).method == ca.solvers.plan(small).method == "hybrid"
    small_cert = ca.certify(small, collapse.collapse(Z), solution.intercept)
    assert cert.objective == pytest.approx(solution.objective, rel=1e-12)
    assert cert.objective == pytest.approx(small_cert.objective, rel=1e-12)
    assert cert.lower_bound == pytest.approx(small_cert.lower_bound, rel=1e-12)
    assert cert.lower_bound <= solution.lower_bound * (1 + 1e-13) <= solution.objective
    # the expanded heads are balanced: their weight decay is the nuclear norm
    network = solution.to_network()
    nuclear = float(torch.linalg.svdvals(Z).sum())
    assert float(network.weight_decay().detach()) == pytest.approx(nuclear, rel=1e-10)
    W1, W2 = solution.heads
    assert 0.5 * float(W1.pow(2).sum() + W2.pow(2).sum()) == pytest.approx(nuclear, rel=1e-10)
    # ... and the same optimum as the factorized solver on the full program
    full = ca.solve(problem, method="factorized", tol=1e-7)
    assert full.certificate.collapse is None
    assert solution.objective == pytest.approx(full.objective, rel=2e-7)


def test_warm_starts_cross_between_full_and_collapsed_solutions():
    head = ca.heads.FNO(grid=GRID)
    problem = ca.Problem(head, tokens(0), labels(0), beta=0.05)
    first = ca.solve(problem, tol=1e-8)
    again = ca.solve(problem, tol=1e-8, init=first)
    assert again.n_iter <= 10 and again.objective == pytest.approx(first.objective, rel=1e-8)
    from_factorized = ca.solve(problem.with_beta(0.04), tol=1e-8,
                               init=ca.solve(problem, method="factorized", tol=1e-6))
    assert from_factorized.status == "optimal"


def test_token_level_targets_and_gated_heads_are_not_collapsed():
    gated = ca.Problem(ca.heads.FNO(grid=GRID, activation="gated", n_gates=2), tokens(0),
                       labels(0), beta=0.05)
    assert ca.solve(gated, tol=1e-6).certificate.collapse is None
    rng = torch.Generator().manual_seed(0)
    targets = torch.randn((7, S, C), generator=rng, dtype=torch.float64)
    dense = ca.Problem(ca.heads.FNO(grid=GRID), tokens(0), targets, beta=0.05, loss="squared")
    assert ca.solve(dense, tol=1e-6).certificate.collapse is None
