"""The block nuclear norm R(Z) = Σ_g ‖Z_g‖_* of SPEC.md §1: value, prox and dual norm together.

Blocks are stacked in one tensor ``Z`` of shape (G, p, q) (every head's blocks share a shape).
"""

from __future__ import annotations

import torch

__all__ = ["BlockNuclearNorm"]


class BlockNuclearNorm:
    """R(Z) = Σ_g ‖Z_g‖_* for Z of shape (G, p, q).

    - ``value``: Σ_g Σ_k σ_k(Z_g).
    - ``prox``: argmin_X ½‖X − Z‖²_F + τ R(X) is singular-value soft-thresholding of each
      block, σ_k → max(σ_k − τ, 0).
    - ``dual_norms``: the dual norm of the nuclear norm is the spectral norm; R's dual norm is
      max_g ‖M_g‖_op. Computed here exactly (SVD).
    """

    def value(self, Z: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svdvals(Z).sum()

    def prox(self, Z: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (prox_{τR}(Z), R(prox_{τR}(Z)))."""
        U, S, Vh = torch.linalg.svd(Z, full_matrices=False)  # (G,p,k) (G,k) (G,k,q)
        S = (S - tau).clamp_min(0.0)
        return (U * S[:, None, :]) @ Vh, S.sum()

    def dual_norms(self, M: torch.Tensor) -> torch.Tensor:
        """‖M_g‖_op for each block, shape (G,)."""
        return torch.linalg.matrix_norm(M, ord=2)
