"""Mixer: the pooled collapse of SPEC.md §3 identity 3, checked against CVXPY."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest

import cvxattn as ca
from tests.helpers import labels, tokens


def test_linear_mixer_collapses_to_token_weights_with_beta_sqrt_s():
    """With mean pooling, linear Mixer(β) ≡ min over Z̄ ∈ R^{s×dc} of
    mean CE(Σ_{t,k} X[t,k] Z̄[t,(k,o)]) + β√s ‖Z̄‖_*  (token mixing collapses)."""
    n, s, d, c, beta = 7, 6, 4, 6, 0.05
    X, y = tokens(11, n=n, s=s, d=d), labels(11, n=n, c=c)
    mixer = ca.solve(ca.Problem(ca.heads.Mixer(), X, y, beta), tol=1e-10)

    Zbar, b = cp.Variable((s, d * c)), cp.Variable(c)
    Xf = X.numpy().reshape(n, s * d)
    logits = Xf @ cp.reshape(Zbar, (s * d, c), order="C") + np.ones((n, 1)) @ cp.reshape(
        b, (1, c), order="C")
    onehot = np.eye(c)[y.numpy()]
    loss = (cp.sum(cp.log_sum_exp(logits, axis=1)) - cp.sum(cp.multiply(onehot, logits))) / n
    reference = cp.Problem(cp.Minimize(loss + beta * math.sqrt(s) * cp.normNuc(Zbar)))
    reference.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert mixer.objective == pytest.approx(reference.value, rel=1e-6)
