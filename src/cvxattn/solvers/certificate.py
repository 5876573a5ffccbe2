"""The duality-gap certificate of SPEC.md §4.

For any primal blocks Z:
1. re-fit the intercept exactly, b* = argmin_b f(Z, b) (then Σ_i λ_i = 0);
2. λ_i = ∇_p ℓ(p_i(Z) + b*, y_i) and the gradient blocks M_g = (1/n) Σ_i A_{i,g}ᵀ λ_i;
3. scale θ = min(1, β / max_g ‖M_g‖_op) so that every ‖θ M_g‖_op ≤ β (dual feasibility);
4. D = −(1/n) Σ_i ℓ*(θ λ_i, y_i) ≤ P* ≤ P(Z, b*).

Weak duality: for every feasible Λ, ℓ(p) ≥ ⟨λ, p⟩ − ℓ*(λ) and ⟨M, Z⟩ ≥ −β‖Z‖_* give
P(Z, b) ≥ D(Λ). So P − D bounds the suboptimality of (Z, b*); the reported gap is
(P − D) / |P|. Spectral norms here are exact (SVD of the dense gradient blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..problem import Problem

__all__ = ["Certificate", "certify"]


@dataclass(frozen=True)
class Certificate:
    """A primal value, a dual lower bound and the point they certify."""

    objective: float  # P(Z, b*)
    lower_bound: float  # D(θΛ) ≤ P*
    intercept: torch.Tensor  # b* (c,), Σ b = 0 for cross-entropy
    spectral_norms: torch.Tensor  # ‖M_g‖_op for each block, (G,)
    theta: float  # dual scaling
    method: str = "exact SVD"

    @property
    def gap(self) -> float:
        """Relative duality gap (P − D) / |P| (P − D when P = 0)."""
        return relative_gap(self.objective, self.lower_bound)


def relative_gap(objective: float, lower_bound: float) -> float:
    return max(objective - lower_bound, 0.0) / max(abs(objective), 1e-300)


def certify(problem: Problem, Z: torch.Tensor, intercept: torch.Tensor | None = None
            ) -> Certificate:
    """Certificate of (Z, b*) where b* re-fits the intercept, warm-started at ``intercept``."""
    with torch.no_grad():
        raw = problem.outputs(Z)  # (n, c) or (n, s, c), no intercept
        if problem.fit_intercept:
            start = intercept if intercept is not None else raw.new_zeros(problem.c)
            b = problem.loss.fit_intercept(raw, problem.y, start)
        else:
            b = raw.new_zeros(problem.c)
    loss, grad_Z, _ = problem.loss_and_gradient(Z, b)
    with torch.no_grad():
        norms = problem.regularizer.dual_norms(grad_Z)  # (G,)
        largest = float(norms.max())
        theta = 1.0 if largest <= problem.beta else problem.beta / largest
        duals = theta * problem.loss.gradient(raw + b, problem.y)
        lower = float(problem.loss.dual_value(duals, problem.y))
        objective = float(loss) + problem.beta * float(problem.regularizer.value(Z))
    return Certificate(objective, lower, b, norms, theta)
