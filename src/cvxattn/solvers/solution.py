"""The frozen result of every solver: blocks, intercept, certificate, status, history."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

import torch
from sklearn.exceptions import ConvergenceWarning as _SklearnConvergenceWarning

from ..heads.base import Head, HeadNetwork
from ..problem import Problem, as_tokens

__all__ = ["Solution", "FittedBlocks", "Checkpoint", "ConvergenceWarning", "RANK_RTOL",
           "Status", "CertificateInfo", "FLOAT32_TRUST", "balanced_heads", "block_ranks",
           "finish_in_float64", "no_progress", "warn_unconverged"]

# singular values below RANK_RTOL · (largest of the solution) count as zero
RANK_RTOL = 1e-10
FLOAT32_TRUST = 1e-5  # relative gaps below this are proven in float64 (float32 ε ≈ 1.2e-7)


class ConvergenceWarning(_SklearnConvergenceWarning):
    """A solver stopped before its relative duality gap reached the tolerance."""


class Status(str, Enum):
    """Why a solve stopped; ``advice`` says what to do about it. Equal to its string value
    (``Status.OPTIMAL == "optimal"``), which is how it prints and is stored."""

    OPTIMAL = "optimal"
    MAX_ITER = "max_iter"
    STALLED = "stalled"
    INACCURATE = "inaccurate"

    __str__ = str.__str__
    __format__ = str.__format__
    __repr__ = str.__repr__  # shows as the string it equals: 'optimal'

    @property
    def advice(self) -> str:
        return {
            Status.OPTIMAL: "certified: the relative duality gap is within tol",
            Status.MAX_ITER: "the iteration limit came first: raise max_iter, loosen tol, or "
                             "increase beta (a larger β is better conditioned)",
            Status.STALLED: "neither bound moved any more, the floating-point limit on this "
                            "problem: loosen tol (the objective itself is much closer to the "
                            "optimum than the gap)",
            Status.INACCURATE: "the generic conic solver reported low accuracy: the gap says "
                               "how far the point is; use method='fista' or 'factorized'",
        }[self]


@dataclass(frozen=True)
class CertificateInfo:
    """How a solution's lower bound was proven: the spectral norms of the gradient blocks
    computed ``exactly`` (an SVD, or a Krylov basis that spans every block) or bounded from
    ``steps`` Lanczos steps, σ_g ≤ σ̂_g / √(1 − ε), with ``probability`` ≥ 1 − δ · checks
    (Kuczyński–Woźniakowski); ``precision``: the arithmetic, when it changed during the run.
    ``str()`` gives the sentence that tables and logs show."""

    norms: str  # "exact SVD", "block Lanczos via probe heads" (or "... via closed-form
    # gradient products", Head.gradient_product), or "none"
    exact: bool = True
    steps: int | None = None
    epsilon: float | None = None
    probability: float | None = None
    checks: int | None = None
    precision: str | None = None
    collapse: str | None = None  # solved as the smaller program the pooled one equals

    def __str__(self) -> str:
        if self.norms == "none":
            text = "none: no check reached a proven bound (raise max_iter)"
        elif self.steps is None:
            text = self.norms
        elif self.exact:
            text = (f"{self.norms}, {self.steps} steps; exact (the Krylov basis spans every "
                    "block)")
        else:
            text = (f"{self.norms}, {self.steps} steps from random starts; σ_g ≤ σ̂_g/√(1−ε), "
                    f"ε = {self.epsilon:.2e}, with probability ≥ {self.probability:.4g} "
                    f"(Kuczyński–Woźniakowski bound, union over blocks and {self.checks} "
                    "certificate(s))")
        notes = [text] + [note for note in (self.precision, self.collapse) if note]
        return "; ".join(notes)


@dataclass(frozen=True)
class Checkpoint:
    """One evaluation of the certificate during a run."""

    iteration: int
    seconds: float
    objective: float  # P at the iterate (intercept re-fitted)
    lower_bound: float  # best dual value so far
    gap: float  # (P − D) / |P| with the best P and D so far
    # factorized solver: the gap with the Lanczos estimates σ̂ of the spectral norms in place
    # of their proven bounds; no proof (σ̂ ≤ σ), but it says how far a run is before its first
    # proven bound. None for FISTA, whose every gap is proven.
    estimated_gap: float | None = None


def no_progress(history: list[Checkpoint], eps: float, patience: int) -> bool:
    """True when neither the best objective nor the best lower bound improved by more than
    rounding over the last ``patience`` checks (a run at its floating-point limit)."""
    if len(history) <= patience:
        return False
    then, now = history[-patience - 1], history[-1]
    scale = 100 * eps * abs(now.objective)
    best_then = min(h.objective for h in history[:-patience])
    best_now = min(h.objective for h in history)
    # "> then + scale" is False for two −inf bounds (no proven bound yet: no progress either)
    return best_then - best_now <= scale and not now.lower_bound > then.lower_bound + scale


def finish_in_float64(dtype: torch.dtype, status: str, tol: float, n_iter: int,
                      max_iter: int) -> bool:
    """The one float32 → float64 policy of every solver: a float32 run goes on in float64 when
    it stalled above ``tol`` with iterations left (its rounding swamps the gap), or when it
    claims a gap below ``FLOAT32_TRUST``, which float32's own rounding of P and D cannot prove
    (the float64 run then starts by certifying the point, and stops there when it holds)."""
    if dtype != torch.float32:
        return False
    return (status == "stalled" and n_iter < max_iter) or (status == "optimal"
                                                           and tol < FLOAT32_TRUST)


def warn_unconverged(solver: str, status: str, n_iter: int, gap: float, tol: float,
                     patience: int, dtype: torch.dtype) -> None:
    """The ConvergenceWarning of a run that stopped above ``tol``: it quotes the gap and the
    tolerance and says what to try (nothing for ``status="optimal"``)."""
    if status == "max_iter":
        warnings.warn(
            f"{solver} stopped after {n_iter} iterations with relative duality gap {gap:.2e} > "
            f"tol {tol:.1e}; raise max_iter, loosen tol, or increase beta (a larger β is "
            "better conditioned)", ConvergenceWarning, stacklevel=4)
    elif status == "stalled":
        warnings.warn(
            f"{solver} stalled after {n_iter} iterations at relative duality gap {gap:.2e} > "
            f"tol {tol:.1e}: neither bound moved in {patience} checks, the limit of {dtype} on "
            "this problem; loosen tol (the objective itself is much closer to the optimum than "
            "the gap)", ConvergenceWarning, stacklevel=4)


def block_ranks(sigma: torch.Tensor) -> torch.Tensor:
    """Rank of each block from its singular values σ (G, k): those above RANK_RTOL · the
    largest of the whole solution, (G,)."""
    if sigma.numel() == 0:
        return torch.zeros(sigma.shape[0], dtype=torch.int64)
    return (sigma > RANK_RTOL * sigma.max().clamp_min(torch.finfo(sigma.dtype).tiny)).sum(1)


def balanced_heads(head, heads=None, blocks=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced heads (W1, W2) of a fitted point, from its heads (re-balanced without forming
    Z) or else from its blocks (the SVD split): ‖W1_r‖ = ‖W2_r‖ = √σ_r, singular values below
    RANK_RTOL · max dropped, at least one (zero) head per block."""
    if heads is None:
        return head.heads_from_blocks(blocks, rtol=RANK_RTOL)
    W1, W2, _ = head.balance(*heads, rtol=RANK_RTOL)
    if W1.shape[1] == 0:  # Z = 0: one zero head per block, as heads_from_blocks gives
        W1 = W1.new_zeros((W1.shape[0], 1, *head.w1_shape))
        W2 = W2.new_zeros((W2.shape[0], 1, *head.w2_shape))
    return W1, W2


class FittedBlocks:
    """What fitted blocks do, for :class:`Solution` and a model loaded from disk alike.

    Needs ``head`` (bound), ``blocks`` Z (G, p, q), ``intercept`` b (c,), ``pooled``,
    ``loss_name`` and ``fit_intercept``.
    """

    heads = None  # (W1, W2) when fitted as a network: blocks are then formed only on demand

    @property
    def ranks(self) -> torch.Tensor:
        """Rank of each block Z_g, (G,)."""
        if self.heads is not None:
            S = self.head.balance(*self.heads)[2]  # (G, k), from the heads without forming Z
        else:
            S = torch.linalg.svdvals(self.blocks)  # (G, k)
        return block_ranks(S)

    @property
    def n_heads(self) -> int:
        """Heads of the network this solution equals: Σ_g rank(Z_g) (the paper's m*)."""
        return int(self.ranks.sum())

    def decision_function(self, X) -> torch.Tensor:
        """Logits (n, c) (or token outputs (n, s, c) for token-level targets) on new tokens."""
        s, d, _ = self.head.dims
        like = self.heads[0] if self.heads is not None else self.blocks
        X = as_tokens(X, "X", like.dtype, like.device)
        if X.shape[1:] != (s, d):
            raise ValueError(f"X: expected tokens of shape (n, {s}, {d}), got {tuple(X.shape)}")
        with torch.no_grad():
            if self.heads is not None:  # the network: cheaper than Z when the rank is low
                data = self.head.lift(X, design=False)
                out = self.head.network_outputs(*self.heads, data, self.pooled)
            elif self.pooled:
                out = self.head.pooled(self.blocks, self.head.lift(X))
            else:
                out = self.head.tokens(self.blocks, self.head.lift(X))
        return out + self.intercept

    def predict(self, X) -> torch.Tensor:
        """Class indices (n,) for cross-entropy; the outputs themselves for squared loss."""
        out = self.decision_function(X)
        return out.argmax(-1) if self.loss_name == "cross_entropy" else out

    def to_network(self) -> HeadNetwork:
        """The network with exactly these outputs: balanced heads from the SVD of each block,
        so that mean loss + β · weight_decay equals ``objective``."""
        W1, W2 = balanced_heads(self.head, self.heads,
                                self.blocks if self.heads is None else None)
        intercept = self.intercept.clone() if self.fit_intercept else None
        return HeadNetwork(self.head, W1, W2, intercept, self.pooled)


@dataclass(frozen=True)
class Solution(FittedBlocks):
    """A solved :class:`~cvxattn.Problem`: what was solved (the bound head, the loss, β, the
    intercept and pooling settings, the number of samples) and the certified point, but never
    the problem itself, its training data or its lifted data, so that keeping a solution
    (a path of them, a table's worth) does not keep the data alive.

    The point is stored as dense blocks (FISTA, CVXPY) or as the network's balanced heads
    ``heads`` = (W1, W2) (factorized); ``blocks`` works for both. ``objective`` P(Z, b) of the
    returned point, ``lower_bound`` a certified D ≤ P*, ``gap`` =
    (P − D)/|P| ≥ (P − P*)/|P|. ``status`` is a :class:`Status` (``status.advice`` says
    what to do): ``"optimal"`` (gap ≤ tol), ``"max_iter"`` (the run stopped first),
    ``"stalled"`` (the bounds stopped moving at the floating-point limit) or ``"inaccurate"``
    (CVXPY's low-accuracy result). ``certificate`` is a :class:`CertificateInfo`;
    ``method_reason`` says why ``method`` solved it (requested, or ``"auto"``'s reason);
    ``n_passes`` counts the passes over the data it took.
    """

    head: Head = field(repr=False)  # bound to (s, d, c), gates resolved
    loss_name: str
    beta: float
    fit_intercept: bool
    pooled: bool  # pooled logits (n, c), else token-level outputs (n, s, c)
    n_samples: int
    intercept: torch.Tensor  # b (c,)
    objective: float
    lower_bound: float
    gap: float
    status: Status
    method: str
    n_iter: int
    seconds: float
    certificate: CertificateInfo  # how the dual norms were computed
    history: tuple[Checkpoint, ...] = field(default=(), repr=False)
    # why this method: "method=... requested", or auto's reason (memory, the time model)
    method_reason: str = ""
    # data passes: applications of the map, its adjoint or the network (forward or backward)
    # to all n samples, certificates included (None: not counted, CVXPY)
    n_passes: int | None = None
    dense: torch.Tensor | None = field(default=None, repr=False)  # Z (G, p, q) if solved so
    heads: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self):
        if (self.dense is None) == (self.heads is None):
            raise ValueError("Solution: expected exactly one of dense blocks or heads")

    @cached_property
    def blocks(self) -> torch.Tensor:
        """The convex blocks Z (G, p, q); formed from the heads on first use when the solver
        worked on the network (``method="factorized"``), which can be large."""
        if self.dense is not None:
            return self.dense
        return self.head.blocks_from_heads(*self.heads)

    @classmethod
    def of(cls, problem: Problem, **fields) -> "Solution":
        """The solution of ``problem`` with the given point and certificate ``fields``; the
        problem's settings are copied, the problem is not kept."""
        return cls(head=problem.head, loss_name=problem.loss.name, beta=problem.beta,
                   fit_intercept=problem.fit_intercept, pooled=problem.pooled,
                   n_samples=problem.n, **fields)
