"""The factorized solver's passes over the data: the heads' closed-form gradient-block products
equal the products through probe heads and the dense gradient blocks, for all ten programs; and
every solver counts the passes it makes."""

from __future__ import annotations

import pytest
import torch

import cvxattn as ca
from cvxattn.solvers.passes import NetworkPasses
from tests.helpers import TEN, TEN_IDS, labels, tokens

BETA = 0.05


def _problem(head, pooled=True, seed=0):
    X, y = tokens(seed), labels(seed)
    if not pooled:  # token-level squared loss: targets (n, s, c)
        target = torch.as_tensor(torch.randn(X.shape[0], X.shape[1], 6,
                                             generator=torch.Generator().manual_seed(seed),
                                             dtype=torch.float64))
        return ca.Problem(head, X, target, BETA, loss="squared")
    return ca.Problem(head, X, y, BETA)


def _duals(problem):
    shape = (problem.n, problem.c) if problem.pooled else (problem.n, problem.s, problem.c)
    return torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _dense_blocks(problem, duals):
    """M = (1/n) Σ_i A_iᵀ λ_i by autograd through the convex map (independent of the network)."""
    Z = torch.zeros((problem.head.n_blocks, *problem.head.block_shape), dtype=torch.float64,
                    requires_grad=True)
    with torch.enable_grad():
        phi = (problem.outputs(Z) * duals).sum() / problem.n
        return torch.autograd.grad(phi, Z)[0]


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "tokens"])
@pytest.mark.parametrize("name,head", TEN, ids=TEN_IDS)
def test_closed_form_products_equal_probe_heads_and_dense_blocks(name, head, pooled):
    problem = _problem(head, pooled)
    duals = _duals(problem)
    passes = NetworkPasses(problem, chunk_size=3)  # chunks: the sums run over all of them
    G, (p, q) = problem.head.n_blocks, problem.head.block_shape
    gen = torch.Generator().manual_seed(5)
    V = torch.randn(G, 3, q, generator=gen, dtype=torch.float64)
    U = torch.randn(G, 3, p, generator=gen, dtype=torch.float64)
    M = _dense_blocks(problem, duals)
    probe_V = passes._probe(duals, V, left_fixed=False)
    probe_U = passes._probe(duals, U, left_fixed=True)
    assert torch.allclose(probe_V, V @ M.transpose(1, 2), rtol=1e-10, atol=1e-12)
    assert torch.allclose(probe_U, U @ M, rtol=1e-10, atol=1e-12)
    scale = float(M.abs().max())
    before = passes.count
    assert (passes.forward(duals, V) - probe_V).abs().max() <= 1e-10 * scale
    assert (passes.backward(duals, U) - probe_U).abs().max() <= 1e-10 * scale
    closed = next(passes.chunks())[1]
    has_form = pooled and problem.head.gradient_product(duals[:3], V, closed) is not None
    # one pass each in closed form, a forward and a backward through the probe heads without
    assert passes.count - before == (2 if has_form else 4)


def test_the_closed_forms_cover_the_heads_that_solve_factorized_at_scale():
    """Pooled linear attention (the one linear program without a collapse or a small design)
    and every head with a design of the blocks' rows have their closed form."""
    covered = {name for name, head in TEN
               if (lambda p: p.head.gradient_product(
                   _duals(p), torch.zeros(p.head.n_blocks, 1, p.head.block_shape[1],
                                          dtype=torch.float64),
                   NetworkPasses(p).chunks().__next__()[1]) is not None)(_problem(head))}
    assert {"attention-linear", "mlp-linear", "mlp-gated", "fno-gated",
            "bfno-gated"} <= covered


@pytest.mark.parametrize("method", ["fista", "hybrid", "factorized"])
def test_solutions_count_their_passes_over_the_data(method):
    problem = _problem(ca.heads.SelfAttention())
    sol = ca.solve(problem, method=method, tol=1e-6)
    assert sol.status == "optimal"
    # at least a forward and an adjoint per iteration, and no more than a few of each
    assert 2 * sol.n_iter <= sol.n_passes <= 6 * sol.n_iter + 100
    assert ca.solve(problem, method="cvxpy").n_passes is None
