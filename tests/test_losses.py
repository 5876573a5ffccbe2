"""Losses: gradients, conjugates (Fenchel–Young) and the exact intercept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvxattn.losses import CrossEntropy, SquaredLoss, get_loss

rng = np.random.default_rng(0)
N, C = 11, 5
P = torch.as_tensor(rng.normal(size=(N, C)) * 3)
Y = torch.as_tensor(rng.integers(0, C, N))
Y[:C] = torch.arange(C)  # every class present
T = torch.as_tensor(rng.normal(size=(N, 3, C)))


def per_sample(loss, outputs, targets):
    return torch.stack([loss.value(outputs[i:i + 1], targets[i:i + 1]) for i in range(N)])


@pytest.mark.parametrize("loss, targets, outputs", [
    (CrossEntropy(), Y, P), (SquaredLoss(), T, torch.as_tensor(rng.normal(size=(N, 3, C))))])
def test_gradient_is_the_per_sample_gradient(loss, targets, outputs):
    outputs = outputs.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss.value(outputs, targets) * N, outputs)
    torch.testing.assert_close(loss.gradient(outputs.detach(), targets), grad)


@pytest.mark.parametrize("loss, targets, outputs", [
    (CrossEntropy(), Y, P), (SquaredLoss(), T, torch.as_tensor(rng.normal(size=(N, 3, C))))])
def test_fenchel_young_equality_at_the_gradient(loss, targets, outputs):
    """ℓ(p) + ℓ*(λ) = ⟨λ, p⟩ for λ = ∇ℓ(p), sample by sample (through the means)."""
    lam = loss.gradient(outputs, targets)
    lhs = loss.value(outputs, targets) - loss.dual_value(lam, targets)  # mean ℓ + mean ℓ*
    rhs = (lam * outputs).flatten(1).sum(1).mean()
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=0)


def test_cross_entropy_conjugate_lower_bounds_for_any_feasible_dual():
    """ℓ(p) + ℓ*(λ) ≥ ⟨λ, p⟩ for λ = q − e_y, q in the simplex."""
    loss = CrossEntropy()
    for seed in range(5):
        q = torch.as_tensor(np.random.default_rng(seed).dirichlet(np.ones(C), N))
        lam = q - torch.eye(C, dtype=q.dtype)[Y]
        gap = loss.value(P, Y) - loss.dual_value(lam, Y) - (lam * P).sum(1).mean()
        assert float(gap) >= -1e-12


def test_cross_entropy_intercept_is_exact():
    loss = CrossEntropy()
    b = loss.fit_intercept(P, Y, torch.zeros(C, dtype=P.dtype))
    freq = torch.bincount(Y, minlength=C).double() / N
    # optimality: mean softmax equals the class frequencies, so Σ_i λ_i = 0
    torch.testing.assert_close(torch.softmax(P + b, 1).mean(0), freq.to(P), atol=1e-14, rtol=0)
    assert abs(float(b.sum())) < 1e-12
    # a warm start gives the same intercept
    warm = loss.fit_intercept(P, Y, b + 3.0)
    torch.testing.assert_close(warm, b, atol=1e-12, rtol=0)


def test_cross_entropy_intercept_with_extreme_logits():
    loss = CrossEntropy()
    big = P * 200
    b = loss.fit_intercept(big, Y, torch.zeros(C, dtype=P.dtype))
    assert torch.isfinite(b).all()
    value = loss.value(big + b, Y)
    for shift in (1e-3, -1e-3):
        for k in range(C):
            e = torch.zeros(C, dtype=P.dtype)
            e[k] = shift
            assert float(loss.value(big + b + e, Y)) >= float(value) - 1e-12


def test_squared_intercept_is_the_mean_residual():
    outputs = torch.as_tensor(rng.normal(size=(N, 3, C)))
    b = SquaredLoss().fit_intercept(outputs, T, torch.zeros(C, dtype=T.dtype))
    torch.testing.assert_close((outputs + b - T).sum((0, 1)), torch.zeros(C, dtype=T.dtype),
                               atol=1e-12, rtol=0)


def test_unknown_loss():
    with pytest.raises(ValueError, match="loss: expected one of"):
        get_loss("hinge")
