"""Exact pair contributions (SPEC.md §7) against the literal reference of tests/heads/naive.py."""

from __future__ import annotations

import numpy as np
import torch

import cvxattn as ca
from tests.heads import naive
from tests.heads.test_contract import bound, random_blocks, random_heads
from tests.helpers import C, N, S, tokens

ATOL = 1e-10


def test_pairs_match_the_literal_formula(head):
    h = bound(head)
    X, Z = tokens(11), random_blocks(h, seed=11)
    out = h.pairs(Z, h.lift(X, design=False))
    assert out.shape == (N, S, S, C)
    for i in range(N):
        expected = naive.pairs(h, X[i].numpy(), Z.numpy())
        np.testing.assert_allclose(out[i].numpy(), expected, atol=ATOL, rtol=0)


def test_pairs_sum_over_sources_to_the_token_outputs(head):
    h = bound(head)
    X, Z = tokens(12), random_blocks(h, seed=12)
    data = h.lift(X, design=False)
    torch.testing.assert_close(h.pairs(Z, data).sum(2), h.tokens(Z, data), atol=ATOL, rtol=0)


def test_reference_pairs_sum_to_the_reference_outputs(head):
    """The literal references agree with each other (Σ_t C[a, t] = O[a])."""
    h = bound(head)
    X, Z = tokens(13)[0].numpy(), random_blocks(h, seed=13).numpy()
    np.testing.assert_allclose(naive.pairs(h, X, Z).sum(1), naive.convex(h, X, Z), atol=ATOL,
                               rtol=0)


def test_network_pairs_equal_pairs_at_the_mapped_blocks(head):
    h = bound(head)
    data = h.lift(tokens(14), design=False)
    W1, W2 = random_heads(h, r=3, seed=14)
    torch.testing.assert_close(h.network_pairs(W1, W2, data),
                               h.pairs(h.blocks_from_heads(W1, W2), data), atol=ATOL, rtol=0)


def test_mlp_pairs_are_zero_off_the_diagonal(head):
    h = bound(head)
    if h.name != "mlp":
        return
    data = h.lift(tokens(15), design=False)
    W1, W2 = random_heads(h, r=3, seed=15)
    off = ~torch.eye(S, dtype=torch.bool)
    for C_ in (h.pairs(random_blocks(h, seed=15), data), h.network_pairs(W1, W2, data)):
        assert torch.count_nonzero(C_[:, off]) == 0


def test_profiles_and_mixing_shapes(head):
    h = bound(head)
    data = h.lift(tokens(16), design=False)
    W1, W2 = random_heads(h, r=3, seed=16)
    profiles = h.token_profiles(W1, W2, data)
    assert profiles.ndim == 3 and profiles.shape[:2] == (N, S)
    assert torch.isfinite(profiles).all()
    if h.name != "mlp":
        mixing = h.mixing(W1, W2, data)
        assert mixing.ndim == 4 and mixing.shape[0] == N and mixing.shape[2:] == (S, S)
        assert torch.isfinite(mixing).all()


def test_fno_toy_pairs_follow_the_shift_by_hand():
    """3×3 grid, d = c = 1, linear FNO, Z one-hot at shift u = (0, 1) (row index 1): token a
    receives exactly X[a ⊕ (0,1)] (same row, next column mod 3), from nowhere else."""
    h = ca.heads.FNO(grid=(3, 3)).bind(9, 1, 1)
    X = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(1, 9, 1) * torch.tensor(
        [1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0, 9.0], dtype=torch.float64).reshape(1, 9, 1)
    Z = torch.zeros(1, 9, 1, dtype=torch.float64)
    Z[0, 1, 0] = 1.0
    # a = (r, q) → t = (r, q+1 mod 3), by hand
    source = {0: 1, 1: 2, 2: 0, 3: 4, 4: 5, 5: 3, 6: 7, 7: 8, 8: 6}
    expected = np.zeros((9, 9))
    for a, t in source.items():
        expected[a, t] = X[0, t, 0].item()
    for design in (False, True):
        out = h.pairs(Z, h.lift(X, design=design))
        assert out.shape == (1, 9, 9, 1)
        np.testing.assert_array_equal(out[0, :, :, 0].numpy(), expected)
    np.testing.assert_array_equal(naive.pairs(h, X[0].numpy(), Z.numpy())[:, :, 0], expected)
