"""Block Lanczos through products only: exact once the basis is full, a lower estimate before,
and the Kuczyński–Woźniakowski ε that turns it into a probabilistic upper bound."""

from __future__ import annotations

import math

import torch

from cvxattn.solvers.krylov import KrylovNorm, kw_epsilon


def _matrices(G, p, q, seed=0):
    return torch.randn(G, p, q, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _estimator(M, **kwargs):
    return KrylovNorm(lambda V: V @ M.transpose(1, 2), lambda U: U @ M, tuple(M.shape),
                      dtype=M.dtype, **kwargs)


def test_estimates_grow_to_the_spectral_norm_from_below_on_both_sides():
    for shape in [(3, 50, 20), (2, 20, 50)]:  # Krylov space on the right, then the left side
        M = _matrices(*shape)
        true = torch.linalg.matrix_norm(M, 2)
        est = _estimator(M, exact_limit=0)
        previous = torch.zeros_like(true)
        while not est.exact:
            values = est.step()
            assert bool((values <= true * (1 + 1e-12)).all())
            assert bool((values >= previous - 1e-12).all())  # nested subspaces: monotone
            previous = values.clone()
        torch.testing.assert_close(est.values, true, rtol=1e-12, atol=0)
        assert est.epsilon(1e-3) == 0.0
        u, v, values = est.vectors(3)  # Ritz pairs: M v_i = θ_i u_i, unit, orthonormal
        torch.testing.assert_close(values[:, 0], est.values)
        torch.testing.assert_close(M @ v, u * values[:, None, :], rtol=0, atol=1e-9)
        eye = torch.eye(3, dtype=M.dtype).expand(len(M), 3, 3)
        torch.testing.assert_close(u.transpose(1, 2) @ u, eye, rtol=0, atol=1e-9)
        torch.testing.assert_close(v.transpose(1, 2) @ v, eye, rtol=0, atol=1e-9)


def test_small_sides_are_applied_to_the_identity_exactly():
    M = _matrices(4, 30, 6)
    est = _estimator(M)  # N = 6 ≤ exact_limit
    assert est.exact
    torch.testing.assert_close(est.values, torch.linalg.matrix_norm(M, 2), rtol=1e-12, atol=0)


def test_warm_start_converges_in_fewer_steps():
    M = _matrices(1, 400, 300, seed=2)
    true = float(torch.linalg.matrix_norm(M, 2)[0])
    cold = _estimator(M, seed=1)
    for _ in range(5):
        cold.step()
    v = torch.linalg.svd(M)[2][:, 0, :]  # the exact top right vector
    warm = _estimator(M, seed=1, warm=v)
    warm.step()
    assert abs(float(warm.values[0]) - true) < abs(float(cold.values[0]) - true)
    assert abs(float(warm.values[0]) - true) <= 1e-10 * true


def test_kw_epsilon_inverts_the_bound():
    for steps, dim, delta in [(10, 100, 1e-3), (200, 10_000, 1e-6)]:
        eps = kw_epsilon(steps, dim, delta)
        assert 0 < eps < 1
        bound = 1.648 * math.sqrt(dim) * math.exp(-math.sqrt(eps) * (2 * steps - 1))
        assert math.isclose(bound, delta, rel_tol=1e-9)
    assert kw_epsilon(0, 10, 0.1) == 1.0
    # more steps, smaller ε
    assert kw_epsilon(100, 100, 1e-3) < kw_epsilon(50, 100, 1e-3)
