"""FNO and BlockFNO: the FFT form (SPEC.md §3 identity 2) and the pooled collapses (identity 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import cvxattn as ca
from tests.heads import naive
from tests.helpers import labels, tokens

TIGHT = 1e-10


@pytest.mark.parametrize("grid", [(3, 4), (4, 3), (3, 3)])
@pytest.mark.parametrize("groups", [1, 2])
def test_fft_form_with_per_frequency_weights_equals_circulant_form(grid, groups):
    """Identity 2: DFT → a weight per frequency → inverse DFT → channel map equals
    Σ_r (circ(X) w1_r) w2_rᵀ under the kernel map w1 ↦ conj(DFT(w1))."""
    s, d, c, r = grid[0] * grid[1], 4, 6, 3
    head = ca.heads.BlockFNO(groups=groups, grid=grid).bind(s, d, c)
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.normal(size=(5, s, d)))
    W1 = torch.as_tensor(rng.normal(size=(groups, r, s, d // groups)))
    W2 = torch.as_tensor(rng.normal(size=(groups, r, c // groups)))
    weights = head.spectral_weights(W1)  # (G, r, h, w//2+1, d/B) complex
    fft_form = head.spectral_tokens(weights, W2, head.lift(X))
    for i in range(len(X)):
        circulant = naive.block_fno_network(X[i].numpy(), W1.numpy(), W2.numpy(), grid, groups)
        np.testing.assert_allclose(fft_form[i].numpy(), circulant, atol=1e-10, rtol=0)


def test_fno_shift_direction_is_pinned():
    """circ(X)[t,(u,k)] = X[t ⊕ u, k]: a delta kernel at shift u reads the token at t + u."""
    grid, s, d = (3, 4), 12, 1
    head = ca.heads.FNO(grid=grid).bind(s, d, 1)
    X = torch.arange(s, dtype=torch.float64).reshape(1, s, 1)
    Z = torch.zeros(1, s * d, 1, dtype=torch.float64)
    u = 1 * 4 + 1  # shift by one row and one column
    Z[0, u, 0] = 1.0
    out = head.tokens(Z, head.lift(X))[0, :, 0]
    expected = [((t // 4 + 1) % 3) * 4 + (t % 4 + 1) % 4 for t in range(s)]
    assert out.round().long().tolist() == expected


def test_linear_fno_collapses_to_linear_mlp_with_beta_over_sqrt_s():
    """Identity 3: with mean pooling, linear FNO(β) ≡ linear MLP(β/√s)."""
    grid, beta = (2, 5), 0.05
    X, y = tokens(7), labels(7)
    s = grid[0] * grid[1]
    fno = ca.solve(ca.Problem(ca.heads.FNO(grid=grid), X, y, beta), tol=TIGHT)
    mlp = ca.solve(ca.Problem(ca.heads.MLP(), X, y, beta / math.sqrt(s)), tol=TIGHT)
    assert fno.objective == pytest.approx(mlp.objective, rel=1e-8)
    # the optimal FNO kernel is spread evenly over the shifts
    kernel = fno.blocks[0].reshape(s, -1, fno.blocks.shape[-1])  # (s, d, c)
    torch.testing.assert_close(kernel, kernel.mean(0).expand_as(kernel), atol=1e-5, rtol=0)


def test_linear_block_fno_collapses_to_block_diagonal_linear_model():
    """Identity 3: linear B-FNO(β) ≡ block-diagonal linear model on mean tokens, β/√s."""
    grid, beta, groups = (2, 5), 0.05, 2
    X, y = tokens(8), labels(8)
    s = grid[0] * grid[1]
    bfno = ca.solve(ca.Problem(ca.heads.BlockFNO(groups=groups, grid=grid), X, y, beta),
                    tol=TIGHT)
    one_token = X.mean(1, keepdim=True)  # (n, 1, d): a 1×1 grid is a block-diagonal linear map
    diag = ca.solve(ca.Problem(ca.heads.BlockFNO(groups=groups, grid=(1, 1)), one_token, y,
                               beta / math.sqrt(s)), tol=TIGHT)
    assert bfno.objective == pytest.approx(diag.objective, rel=1e-8)


def test_token_level_targets_break_the_fno_collapse():
    grid, beta = (2, 5), 0.05
    X = tokens(9)
    s = grid[0] * grid[1]
    Y = torch.as_tensor(np.random.default_rng(9).normal(size=(X.shape[0], s, 3)))
    fno = ca.solve(ca.Problem(ca.heads.FNO(grid=grid), X, Y, beta, loss="squared"), tol=1e-9)
    mlp = ca.solve(ca.Problem(ca.heads.MLP(), X, Y, beta / math.sqrt(s), loss="squared"),
                   tol=1e-9)
    assert abs(fno.objective - mlp.objective) > 1e-3 * mlp.objective


def test_grid_and_groups_are_validated():
    with pytest.raises(ValueError, match="grid"):
        ca.heads.FNO(grid=(2, 2)).bind(6, 4, 6)
    with pytest.raises(ValueError, match="grid"):
        ca.heads.FNO().bind(6, 4, 6)  # 6 tokens is not a square
    assert ca.heads.FNO().bind(9, 4, 6).grid == (3, 3)
    with pytest.raises(ValueError, match="groups"):
        ca.heads.BlockFNO(groups=3, grid=(2, 3)).bind(6, 4, 6)
    with pytest.raises(ValueError, match="groups"):
        ca.heads.BlockFNO(groups=0, grid=(2, 3))
    with pytest.raises(ValueError, match="grid"):
        ca.heads.BlockFNO(groups=2, grid=(2, -3))
