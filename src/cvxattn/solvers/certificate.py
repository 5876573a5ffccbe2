"""The duality-gap certificate of SPEC.md §4.

For any primal blocks Z:
1. re-fit the intercept exactly, b* = argmin_b f(Z, b) (then Σ_i λ_i = 0);
2. λ_i = ∇_p ℓ(p_i(Z) + b*, y_i) and the gradient blocks M_g = (1/n) Σ_i A_{i,g}ᵀ λ_i;
3. scale θ = min(1, β / max_g ‖M_g‖_op) so that every ‖θ M_g‖_op ≤ β (dual feasibility);
4. D = −(1/n) Σ_i ℓ*(θ λ_i, y_i) ≤ P* ≤ P(Z, b*).

Weak duality: for every feasible Λ, ℓ(p) ≥ ⟨λ, p⟩ − ℓ*(λ) and ⟨M, Z⟩ ≥ −β‖Z‖_* give
P(Z, b) ≥ D(Λ). So P − D bounds the suboptimality of (Z, b*); the reported gap is
(P − D) / |P|. Spectral norms here are exact (SVD of the dense gradient blocks).

θ∇ℓ converges only as fast as the square root of the primal error; :class:`DualExtrapolation`
adds a better dual point built from the last few certificates.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import torch

from ..problem import Problem

__all__ = ["Certificate", "certify", "dual_bound"]


@dataclass(frozen=True)
class Certificate:
    """A primal value, a dual lower bound and the point they certify."""

    objective: float  # P(Z, b*)
    lower_bound: float  # D(θΛ) ≤ P*
    intercept: torch.Tensor  # b* (c,), Σ b = 0 for cross-entropy
    spectral_norms: torch.Tensor  # ‖M_g‖_op for each block, (G,)
    theta: float  # dual scaling
    duals: torch.Tensor = field(repr=False)  # λ_i = ∇ℓ(p_i) before scaling, like the outputs
    grad_blocks: torch.Tensor = field(repr=False)  # M = (1/n) Σ_i A_iᵀ λ_i, (G, p, q)
    method: str = "exact SVD"

    @property
    def gap(self) -> float:
        """Relative duality gap (P − D) / |P| (P − D when P = 0)."""
        return relative_gap(self.objective, self.lower_bound)


def relative_gap(objective: float, lower_bound: float) -> float:
    return max(objective - lower_bound, 0.0) / max(abs(objective), 1e-300)


def certify(problem: Problem, Z: torch.Tensor, intercept: torch.Tensor | None = None,
            outputs: torch.Tensor | None = None) -> Certificate:
    """Certificate of (Z, b*) where b* re-fits the intercept, warm-started at ``intercept``;
    ``outputs``: p(Z) without intercept, when the caller has it."""
    with torch.no_grad():
        raw = problem.outputs(Z) if outputs is None else outputs  # (n, c) or (n, s, c)
        if problem.fit_intercept:
            start = intercept if intercept is not None else raw.new_zeros(problem.c)
            b = problem.loss.fit_intercept(raw, problem.y, start)
        else:
            b = raw.new_zeros(problem.c)
    loss, grad_Z, _ = problem.loss_and_gradient(Z, b, outputs=raw)
    with torch.no_grad():
        duals = problem.loss.gradient(raw + b, problem.y)
        lower, theta, norms = scaled_dual_value(problem, duals, grad_Z)
        objective = float(loss) + problem.beta * float(problem.regularizer.value(Z))
    return Certificate(objective, lower, b, norms, theta, duals, grad_Z)


def scaled_dual_value(problem: Problem, duals: torch.Tensor, grad_blocks: torch.Tensor
                      ) -> tuple[float, float, torch.Tensor]:
    """D(θΛ) with θ = min(1, β / max_g ‖M_g‖_op), M = (1/n) Σ_i A_iᵀ λ_i = ``grad_blocks``.

    Λ must lie in the conjugate's domain and sum to zero over samples when there is an
    intercept. Returns (D, θ, the spectral norms).
    """
    norms = problem.regularizer.dual_norms(grad_blocks)  # (G,)
    value, theta = dual_bound(problem, duals, norms)
    return value, theta, norms


def dual_bound(problem: Problem, duals: torch.Tensor, norms: torch.Tensor
               ) -> tuple[float, float]:
    """The dual value D(θΛ) and θ = min(1, β / max_g σ_g) for duals Λ (in the conjugate's
    domain, summing to zero over samples with an intercept) and bounds σ_g ≥ ‖M_g‖_op of the
    gradient blocks, however they were computed (an SVD, or a Lanczos bound). Every method's
    lower bound is this one function: D(θΛ) ≤ P* whenever every σ_g bounds its norm."""
    largest = float(norms.max())
    theta = 1.0 if largest <= problem.beta else problem.beta / largest
    with torch.no_grad():
        return float(problem.loss.dual_value(theta * duals, problem.y)), theta


class DualExtrapolation:
    """A dual point extrapolated from the last K+1 certificates' Λ (Massias, Gramfort & Salmon,
    "Celer", ICML 2018): with U the differences of consecutive Λ, c = (UᵀU)⁻¹1 / 1ᵀ(UᵀU)⁻¹1 and
    Λ_e = Σ_k c_k Λ_k. Any affine combination keeps Σ_i λ_i = 0, and M is linear in Λ, so
    M(Λ_e) = Σ_k c_k M_k needs no new pass over the data. Λ_e is then moved towards the newest
    Λ just enough to stay in the conjugate's domain, and scaled by θ as usual: every value it
    returns is a valid lower bound, however poor the extrapolation.
    """

    def __init__(self, depth: int = 5):
        self.duals: deque[torch.Tensor] = deque(maxlen=depth + 1)
        self.blocks: deque[torch.Tensor] = deque(maxlen=depth + 1)

    def lower_bound(self, problem: Problem, cert: Certificate) -> float:
        """Add ``cert`` and return the extrapolated D (−inf until K+1 certificates are in)."""
        self.duals.append(cert.duals)
        self.blocks.append(cert.grad_blocks)
        if len(self.duals) < self.duals.maxlen:
            return -math.inf
        with torch.no_grad():
            R = torch.stack([d.flatten() for d in self.duals])  # (K+1, n·c)
            U = R[1:] - R[:-1]  # (K, n·c)
            UU = U @ U.T  # (K, K)
            ridge = 1e-12 * float(UU.diagonal().max().clamp_min(1e-300))
            # singular when the duals stopped changing (a zero ridge in float32): no point
            z, info = torch.linalg.solve_ex(UU + ridge * torch.eye(len(UU), dtype=UU.dtype,
                                                                   device=UU.device),
                                            torch.ones(len(UU), dtype=UU.dtype,
                                                       device=UU.device))
            if int(info) != 0 or not torch.isfinite(z).all() or float(z.sum()) == 0.0:
                return -math.inf
            c = z / z.sum()  # (K,), Σ c = 1
            duals = sum(ck * d for ck, d in zip(c, list(self.duals)[1:]))
            blocks = sum(ck * M for ck, M in zip(c, list(self.blocks)[1:]))
            newest, newest_blocks = cert.duals, cert.grad_blocks
            t = problem.loss.domain_step(newest, duals - newest, problem.y)
            duals = newest + t * (duals - newest)
            blocks = newest_blocks + t * (blocks - newest_blocks)
            return scaled_dual_value(problem, duals, blocks)[0]
