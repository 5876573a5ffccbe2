"""The structure of the optimum: spectra and attention block norms, from heads and from blocks,
Corollary 3.2 seen in the block norms, and the rank along a β path."""

from __future__ import annotations

import pytest
import torch

import cvxattn as ca
from cvxattn.explain import block_norms, rank_path, spectrum
from tests.heads.test_attention import uncorrelated_groups
from tests.helpers import labels, tokens


def test_spectrum_and_block_norms_agree_from_heads_and_from_blocks():
    head = ca.heads.SelfAttention(activation="gated", n_gates=2, seed=1)
    solution = ca.solve(ca.Problem(head, tokens(0), labels(0), beta=0.05), method="factorized",
                        tol=1e-4)
    Z = solution.blocks  # (G, d², dc) formed from the heads
    dense = ca.explain.attributions.Fitted(solution.head, Z, None, solution.intercept, True)
    sigma = spectrum(solution)
    k = sigma.shape[1]
    torch.testing.assert_close(sigma, torch.linalg.svdvals(Z)[:, :k], atol=1e-10, rtol=0)
    torch.testing.assert_close(block_norms(solution), block_norms(dense), atol=1e-10, rtol=0)
    d, c = solution.head.d, solution.head.c
    grid = Z.reshape(-1, d, d, d, c)  # (G, k, i, l, o)
    torch.testing.assert_close(block_norms(dense)[1, 2, 3], grid[1, 2, :, 3, :].norm(),
                               atol=1e-12, rtol=0)


def test_block_norms_show_corollary_3_2():
    """Feature groups uncorrelated in every sample: zero blocks across groups."""
    X, y = uncorrelated_groups(7, 6, (2, 3), seed=0), labels(0, n=7, c=4)
    solution = ca.solve(ca.Problem(ca.heads.SelfAttention(), X, y, beta=0.02), tol=1e-10)
    norms = block_norms(solution)[0]  # (d, d)
    group = torch.tensor([0, 0, 1, 1, 1])
    across = norms[group[:, None] != group[None, :]]
    assert float(norms.max()) > 1e-3
    assert float(across.max()) <= 1e-8 * float(norms.max())


def test_block_norms_are_for_attention_heads_only():
    solution = ca.solve(ca.Problem(ca.heads.MLP(), tokens(0), labels(0), beta=0.05), tol=1e-4)
    with pytest.raises(ValueError, match="model: expected an attention head"):
        block_norms(solution)


def test_rank_grows_as_beta_falls_along_a_path():
    head = ca.heads.MLP(activation="gated", n_gates=3, seed=0)
    solutions, init = [], None
    for beta in (0.3, 0.1, 0.03, 0.01):
        init = ca.solve(ca.Problem(head, tokens(0), labels(0), beta=beta), tol=1e-6, init=init)
        solutions.append(init)
    path = rank_path(solutions)
    assert [p["beta"] for p in path] == [0.3, 0.1, 0.03, 0.01]
    heads = [p["heads"] for p in path]
    assert heads == [s.n_heads for s in solutions]
    assert heads[0] < heads[-1] and heads == sorted(heads)
