"""Losses of SPEC.md §1: value, gradient, convex conjugate and the exact intercept.

Every loss acts on one sample's outputs ``p_i`` (pooled logits of shape (c,), or token-level
outputs of shape (s, c)) and is averaged over the n samples. The dual certificate of SPEC.md §4
needs, for each loss, the conjugate ℓ*(λ, y), the gradient λ = ∇_p ℓ(p, y), and a way to scale a
gradient into the conjugate's domain (:meth:`Loss.dual_value`).
"""

from __future__ import annotations

import torch

__all__ = ["Loss", "CrossEntropy", "SquaredLoss", "get_loss", "LOSSES"]


class Loss:
    """A convex loss ℓ(p, y), averaged over samples."""

    name: str = ""

    def value(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss (1/n) Σ_i ℓ(p_i, y_i); ``outputs`` include the intercept."""
        raise NotImplementedError

    def gradient(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """λ_i = ∇_p ℓ(p_i, y_i) for every sample (not divided by n)."""
        raise NotImplementedError

    def dual_value(self, duals: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """D(Λ) = −(1/n) Σ_i ℓ*(λ_i, y_i)."""
        raise NotImplementedError

    def hessian_parts(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(w, u) with ∇²_p ℓ(p_i, y_i) = diag(w_i) − u_i u_iᵀ for pooled outputs (n, c),
        intercept included (u None when it is zero): the form Newton's method assembles its
        Hessian from with two kinds of matrix products."""
        raise NotImplementedError

    def fit_intercept(
        self, outputs: torch.Tensor, targets: torch.Tensor, start: torch.Tensor
    ) -> torch.Tensor:
        """argmin_b (1/n) Σ_i ℓ(p_i + b, y_i) for outputs without intercept; shape (c,)."""
        raise NotImplementedError

    def domain_step(self, duals: torch.Tensor, direction: torch.Tensor,
                    targets: torch.Tensor) -> float:
        """The largest t ∈ [0, 1] with duals + t · direction in the domain of ℓ*
        (``duals`` is in it)."""
        return 1.0


class CrossEntropy(Loss):
    """Softmax cross-entropy ℓ(p, y) = logsumexp(p) − p_y on pooled logits p ∈ R^c.

    ∇ℓ = softmax(p) − e_y. Conjugate: ℓ*(λ, y) = Σ_k q_k log q_k with q = λ + e_y in the
    simplex (+∞ outside). Scaling λ by θ ∈ [0, 1] keeps q = θ softmax(p) + (1 − θ) e_y in
    the simplex, which is how the certificate builds a feasible dual point.
    """

    name = "cross_entropy"

    def value(self, outputs, targets):
        # outputs (n, c), targets (n,) int64
        picked = outputs.gather(1, targets[:, None])[:, 0]  # (n,)
        return (torch.logsumexp(outputs, dim=1) - picked).mean()

    def hessian_parts(self, outputs):
        sigma = torch.softmax(outputs, dim=1)  # (n, c): ∇²ℓ = diag σ − σσᵀ
        return sigma, sigma

    def gradient(self, outputs, targets):
        grad = torch.softmax(outputs, dim=1)  # (n, c)
        grad[torch.arange(len(targets)), targets] -= 1.0
        return grad

    def dual_value(self, duals, targets):
        q = duals.clone()  # (n, c)
        q[torch.arange(len(targets)), targets] += 1.0
        # Σ_k q log q with 0 log 0 = 0; clamp guards rounding just below 0.
        q = q.clamp_min(0.0)
        neg_entropy = torch.special.xlogy(q, q).sum(dim=1)  # (n,)
        return -neg_entropy.mean()

    def domain_step(self, duals, direction, targets):
        # q = λ + e_y must stay ≥ 0 (its rows keep summing to 1 along any direction Σ_k = 0)
        q = duals.clone()
        q[torch.arange(len(targets)), targets] += 1.0
        shrinking = direction < 0
        if not shrinking.any():
            return 1.0
        return min(1.0, float((q[shrinking].clamp_min(0.0) / -direction[shrinking]).min()))

    def fit_intercept(self, outputs, targets, start):
        """Damped (Levenberg–Marquardt) Newton on the c intercepts, to machine precision.

        φ(b) = mean_i logsumexp(p_i + b) − ⟨freq, b⟩ is invariant to b → b + t·1, and its
        Hessian H = mean(diag σ − σσᵀ) is singular along 1; the gradient mean σ − freq is
        orthogonal to 1, so (H + 11ᵀ/c + μI) δ = −g gives a step in the orthogonal complement.
        μ shrinks after a decrease and grows after a failure, which keeps saturated softmaxes
        (H ≈ 0) safe. At the optimum mean σ = freq, i.e. Σ_i λ_i = 0, as the certificate needs.
        Returns the intercept with Σ_k b_k = 0.
        """
        n, c = outputs.shape
        freq = torch.bincount(targets, minlength=c).to(outputs.dtype) / n  # (c,)
        ones = torch.full((c, c), 1.0 / c, dtype=outputs.dtype, device=outputs.device)
        eye = torch.eye(c, dtype=outputs.dtype, device=outputs.device)
        eps = torch.finfo(outputs.dtype).eps
        b = start - start.mean()

        def phi(b):
            return torch.logsumexp(outputs + b, dim=1).mean() - freq @ b

        value, mu = phi(b), 1e-12
        for _ in range(200):
            sigma = torch.softmax(outputs + b, dim=1)  # (n, c)
            grad = sigma.mean(0) - freq  # (c,)
            if grad.abs().max() <= 4 * eps:
                break
            hess = torch.diag(sigma.mean(0)) - sigma.T @ sigma / n  # (c, c)
            step = -torch.linalg.solve(hess + ones + mu * eye, grad)
            predicted = float(grad @ step)  # < 0
            new_value = phi(b + step)
            # below rounding the values cannot tell; the (tiny) Newton step is then taken
            at_rounding = -predicted <= 10 * eps * (1.0 + abs(float(value)))
            if at_rounding or new_value <= value + 1e-4 * predicted:
                b, value, mu = b + step, new_value, max(mu * 0.1, 1e-15)
            else:
                mu *= 10.0
                if mu > 1e12:
                    break
        return b - b.mean()


class SquaredLoss(Loss):
    """ℓ(p, y) = ½‖p − y‖² summed over every output entry (no 1/s or 1/c factor).

    Works for pooled targets y ∈ R^c and token-level targets Y ∈ R^{s×c} alike.
    ∇ℓ = p − y; ℓ*(λ, y) = ½‖λ‖² + ⟨λ, y⟩ (finite everywhere).
    """

    name = "squared"

    def value(self, outputs, targets):
        return 0.5 * (outputs - targets).pow(2).flatten(1).sum(1).mean()

    def hessian_parts(self, outputs):
        return torch.ones_like(outputs), None  # ∇²ℓ = I

    def gradient(self, outputs, targets):
        return outputs - targets

    def dual_value(self, duals, targets):
        per_sample = (0.5 * duals.pow(2) + duals * targets).flatten(1).sum(1)  # (n,)
        return -per_sample.mean()

    def fit_intercept(self, outputs, targets, start):
        # b is shared by every sample (and every token): the mean residual, shape (c,).
        return (targets - outputs).reshape(-1, outputs.shape[-1]).mean(0)


_LOSSES = {"cross_entropy": CrossEntropy, "squared": SquaredLoss}
LOSSES = tuple(_LOSSES)  # the names get_loss accepts


def get_loss(name: str) -> Loss:
    if name not in _LOSSES:
        raise ValueError(f"loss: expected one of {sorted(_LOSSES)}, got {name!r}")
    return _LOSSES[name]()
