"""The block nuclear norm: value, prox against its defining minimization, dual norm."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import torch

from cvxattn.regularizers import BlockNuclearNorm

Z = torch.as_tensor(np.random.default_rng(0).normal(size=(3, 5, 4)))
R = BlockNuclearNorm()


def test_value_is_the_sum_of_nuclear_norms():
    expected = sum(np.linalg.norm(block, "nuc") for block in Z.numpy())
    assert abs(float(R.value(Z)) - expected) < 1e-12


def test_prox_solves_its_defining_minimization():
    """prox_{τR}(Z) = argmin_X ½‖X − Z‖² + τ Σ_g ‖X_g‖_*, solved here by CVXPY."""
    tau = 0.8
    prox, value = R.prox(Z, tau)
    for g in range(Z.shape[0]):
        X = cp.Variable((5, 4))
        cp.Problem(cp.Minimize(0.5 * cp.sum_squares(X - Z[g].numpy()) + tau * cp.normNuc(X))
                   ).solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11,
                           tol_feas=1e-11)
        np.testing.assert_allclose(prox[g].numpy(), X.value, atol=1e-6)
    torch.testing.assert_close(value, R.value(prox))
    assert int((torch.linalg.svdvals(prox) > 1e-12).sum()) < int(Z.shape[0] * 4)  # it shrinks


def test_dual_norms_are_spectral_norms():
    expected = [np.linalg.norm(block, 2) for block in Z.numpy()]
    np.testing.assert_allclose(R.dual_norms(Z).numpy(), expected, rtol=1e-12)
