"""Shared test data: tiny problems with distinct prime-ish sizes so a transposed axis fails."""

from __future__ import annotations

import numpy as np
import torch

import cvxattn as ca

# n samples, tokens on an h×w grid (a side ≥ 3 so a reversed shift cannot pass), d, c
N, GRID, D, C = 7, (2, 5), 4, 6
S = GRID[0] * GRID[1]


def ten_heads(grid=GRID, n_gates=2, groups=2):
    """The ten programs of SPEC.md §2 as (id, head) pairs."""
    out = []
    for activation in ("linear", "gated"):
        gates = {"n_gates": n_gates, "seed": 1} if activation == "gated" else {}
        out += [
            (f"mlp-{activation}", ca.heads.MLP(activation=activation, **gates)),
            (f"attention-{activation}", ca.heads.SelfAttention(activation=activation, **gates)),
            (f"mixer-{activation}", ca.heads.Mixer(activation=activation, **gates)),
            (f"fno-{activation}", ca.heads.FNO(grid=grid, activation=activation, **gates)),
            (f"bfno-{activation}",
             ca.heads.BlockFNO(groups=groups, grid=grid, activation=activation, **gates)),
        ]
    return out


TEN = ten_heads()
TEN_IDS = [name for name, _ in TEN]


def tokens(seed=0, n=N, s=S, d=D):
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, s, d)))


def labels(seed=0, n=N, c=C):
    """Labels with every class present."""
    rng = np.random.default_rng(seed + 100)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    return torch.as_tensor(rng.permutation(y))


