"""The structure of the optimum: the low rank the block nuclear norm induces (SPEC.md §1).

- :func:`spectrum`: the singular values of every block Z_g, (G, k) descending. The number above
  zero in block g is its rank, the heads the network needs there (the paper's m*).
- :func:`block_norms`: for attention heads, the d×d map of ‖Z_g^{(k,l)}‖_F, which feature pairs
  (k, l) of the Gram matrix G = XᵀX/s interact with which linear model (Corollary 3.2: feature
  groups that are uncorrelated in every sample get zero off-diagonal blocks).
- :func:`rank_path`: ranks and spectra along a β path, for the figure of rank against β.

All of them read the heads when the model has them (never forming Z), else the blocks.

>>> import numpy as np, cvxattn as ca
>>> rng = np.random.default_rng(0)
>>> X, y = rng.normal(size=(30, 6, 3)), np.arange(30) % 2
>>> solution = ca.solve(ca.Problem(ca.heads.SelfAttention(), X, y, beta=0.05), tol=1e-6)
>>> ca.explain.spectrum(solution).shape, ca.explain.block_norms(solution).shape
(torch.Size([1, 6]), torch.Size([1, 3, 3]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..heads.attention import SelfAttention
from ..solvers.solution import block_ranks
from .attributions import fitted

__all__ = ["spectrum", "block_norms", "rank_path"]


def spectrum(model) -> torch.Tensor:
    """Singular values σ (G, k) of every block Z_g, descending (k = the smaller side of a
    block, or the heads per block of a factorized model)."""
    model = fitted(model)
    if model.heads is not None:
        return model.head.balance(*model.heads)[2]  # (G, k), from the heads' QR factors
    return torch.linalg.svdvals(model.blocks)


def block_norms(model) -> torch.Tensor:
    """‖Z_g^{(k,l)}‖_F (G, d, d) for an attention head (SPEC.md §2.2: Z_g is a d×d grid of
    d×c blocks, k indexing W1's columns and l W2's rows).

    From heads, Z^{(k,l)} = Σ_r W1_r[:, k] W2_r[l, :], so ‖Z^{(k,l)}‖² = Σ_{r,r'} ⟨W1_r[:, k],
    W1_{r'}[:, k]⟩ ⟨W2_r[l, :], W2_{r'}[l, :]⟩: two small Gram matrices, no Z.
    """
    model = fitted(model)
    head = model.head
    if not isinstance(head, SelfAttention):
        raise ValueError(f"model: expected an attention head for block_norms (the d×d grid of "
                         f"blocks is theirs), got {type(head).__name__}")
    d, c = head.d, head.c
    if model.heads is not None:
        W1, W2 = model.heads  # (G, r, d, d), (G, r, d, c)
        left = torch.einsum("grik,gsik->gkrs", W1, W1)  # (G, k, r, r)
        right = torch.einsum("grlo,gslo->glrs", W2, W2)  # (G, l, r, r)
        squares = torch.einsum("gkrs,glrs->gkl", left, right)
        return squares.clamp_min(0).sqrt()
    grid = model.blocks.reshape(-1, d, d, d, c)  # (G, k, i, l, o)
    return grid.pow(2).sum((2, 4)).sqrt()  # (G, k, l)


def rank_path(solutions: Sequence) -> list[dict]:
    """Each solution's β, the rank of every block, Σ_g rank (the heads) and the nonzero
    singular values of every block, in the order given (a warm-started path solves from
    large β to small)."""
    out = []
    for solution in solutions:
        sigma = spectrum(solution)
        rank = block_ranks(sigma)
        out.append({"beta": float(solution.beta), "ranks": rank.tolist(),
                    "heads": int(rank.sum()),
                    "spectrum": [row[:r].tolist() for row, r in zip(sigma, rank.tolist())],
                    "gap": float(solution.gap), "status": solution.status})
    return out
