"""Self-attention: Corollary 3.2 (block decoupling), SPEC.md §3 identity 4."""

from __future__ import annotations

import numpy as np
import torch

import cvxattn as ca
from tests.helpers import labels


def uncorrelated_groups(n, s, sizes, seed):
    """Tokens whose feature groups are orthogonal over tokens in every sample, so every
    G_i = X_iᵀX_i / s is block diagonal."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, s, sum(sizes)))
    for i in range(n):
        Q, _ = np.linalg.qr(rng.normal(size=(s, s)))  # orthonormal token directions
        col, row = 0, 0
        for size in sizes:
            basis = Q[:, row:row + size]  # each group lives in its own token subspace
            X[i, :, col:col + size] = basis @ rng.normal(size=(size, size))
            col, row = col + size, row + size
    return torch.as_tensor(X)


def test_block_diagonal_gram_decouples_linear_attention():
    """Corollary 3.2: off-diagonal blocks Z^{(k,l)} (k, l in different groups) vanish at the
    optimum and the nuclear norm splits over the groups."""
    n, s, sizes, c = 7, 6, (2, 3), 4
    d = sum(sizes)
    X, y = uncorrelated_groups(n, s, sizes, seed=0), labels(0, n=n, c=c)
    G = X.transpose(1, 2) @ X / s
    assert G[:, :2, 2:].abs().max() < 1e-12  # the premise holds
    sol = ca.solve(ca.Problem(ca.heads.SelfAttention(), X, y, beta=0.02), tol=1e-10)
    Z4 = sol.blocks[0].reshape(d, d, d, c)  # (k, i, l, o)
    group = torch.tensor([0, 0, 1, 1, 1])
    same = group[:, None] == group[None, :]  # (k, l) in the same group
    off = Z4.permute(0, 2, 1, 3)[~same]  # blocks Z^{(k,l)} across groups
    assert float(Z4.abs().max()) > 1e-3  # not the trivial solution
    assert float(off.abs().max()) <= 1e-8 * float(Z4.abs().max())
    # ‖Z‖_* = Σ_groups ‖Z restricted to rows (k∈a, i) and columns (l∈a, o)‖_*
    Z = sol.blocks[0]
    rows = [torch.cat([torch.arange(k * d, (k + 1) * d) for k in range(5) if group[k] == a])
            for a in (0, 1)]
    cols = [torch.cat([torch.arange(l * c, (l + 1) * c) for l in range(5) if group[l] == a])
            for a in (0, 1)]
    split = sum(torch.linalg.svdvals(Z[r][:, q]).sum() for r, q in zip(rows, cols))
    torch.testing.assert_close(torch.linalg.svdvals(Z).sum(), split, atol=1e-9, rtol=0)
