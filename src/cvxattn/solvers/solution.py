"""The frozen result of every solver: blocks, intercept, certificate, status, history."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from sklearn.exceptions import ConvergenceWarning as _SklearnConvergenceWarning

from ..heads.base import HeadNetwork
from ..problem import Problem, as_tokens

__all__ = ["Solution", "FittedBlocks", "Checkpoint", "ConvergenceWarning", "RANK_RTOL"]

# singular values below RANK_RTOL · (largest of the solution) count as zero
RANK_RTOL = 1e-10


class ConvergenceWarning(_SklearnConvergenceWarning):
    """A solver stopped before its relative duality gap reached the tolerance."""


@dataclass(frozen=True)
class Checkpoint:
    """One evaluation of the certificate during a run."""

    iteration: int
    seconds: float
    objective: float  # P at the iterate (intercept re-fitted)
    lower_bound: float  # best dual value so far
    gap: float  # (P − D) / |P| with the best P and D so far


class FittedBlocks:
    """What fitted blocks do, for :class:`Solution` and a model loaded from disk alike.

    Needs ``head`` (bound), ``blocks`` Z (G, p, q), ``intercept`` b (c,), ``pooled``,
    ``loss_name`` and ``fit_intercept``.
    """

    @property
    def ranks(self) -> torch.Tensor:
        """Rank of each block Z_g, (G,)."""
        S = torch.linalg.svdvals(self.blocks)  # (G, k)
        return (S > RANK_RTOL * S.max().clamp_min(torch.finfo(S.dtype).tiny)).sum(1)

    @property
    def n_heads(self) -> int:
        """Heads of the network this solution equals: Σ_g rank(Z_g) (the paper's m*)."""
        return int(self.ranks.sum())

    def decision_function(self, X) -> torch.Tensor:
        """Logits (n, c) (or token outputs (n, s, c) for token-level targets) on new tokens."""
        s, d, _ = self.head.dims
        X = as_tokens(X, "X", self.blocks.dtype, self.blocks.device)
        if X.shape[1:] != (s, d):
            raise ValueError(f"X: expected tokens of shape (n, {s}, {d}), got {tuple(X.shape)}")
        data = self.head.lift(X)
        with torch.no_grad():
            if self.pooled:
                out = self.head.pooled(self.blocks, data)
            else:
                out = self.head.tokens(self.blocks, data)
        return out + self.intercept

    def predict(self, X) -> torch.Tensor:
        """Class indices (n,) for cross-entropy; the outputs themselves for squared loss."""
        out = self.decision_function(X)
        return out.argmax(-1) if self.loss_name == "cross_entropy" else out

    def to_network(self) -> HeadNetwork:
        """The network with exactly these outputs: balanced heads from the SVD of each block,
        so that mean loss + β · weight_decay equals ``objective``."""
        W1, W2 = self.head.heads_from_blocks(self.blocks, rtol=RANK_RTOL)
        intercept = self.intercept.clone() if self.fit_intercept else None
        return HeadNetwork(self.head, W1, W2, intercept, self.pooled)


@dataclass(frozen=True)
class Solution(FittedBlocks):
    """A solved :class:`~cvxattn.Problem`.

    ``objective`` P(Z, b) of the returned point, ``lower_bound`` a certified D ≤ P*, ``gap`` =
    (P − D)/|P| ≥ (P − P*)/|P|. ``status`` is ``"optimal"`` (gap ≤ tol), ``"max_iter"``
    (the run stopped first: raise ``max_iter``, loosen ``tol`` or increase β) or
    ``"stalled"`` (the bounds stopped moving at the floating-point limit: loosen ``tol``).
    """

    problem: Problem = field(repr=False)
    blocks: torch.Tensor  # Z (G, p, q)
    intercept: torch.Tensor  # b (c,)
    objective: float
    lower_bound: float
    gap: float
    status: str
    method: str
    n_iter: int
    seconds: float
    certificate: str  # how the dual norms were computed
    history: tuple[Checkpoint, ...] = field(default=(), repr=False)

    @property
    def head(self):
        return self.problem.head

    @property
    def pooled(self) -> bool:
        return self.problem.pooled

    @property
    def loss_name(self) -> str:
        return self.problem.loss.name

    @property
    def fit_intercept(self) -> bool:
        return self.problem.fit_intercept
