"""Mixer: the pooled collapse of SPEC.md §3 identity 3."""

from __future__ import annotations

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

import cvxattn as ca
from cvxattn.heads.base import Head
from tests.helpers import labels, tokens

N, S, D, C, BETA = 7, 6, 4, 6, 0.05


class TokenWeights(Head):
    """The collapsed program: p[o] = Σ_{t,k} X[t,k] Z̄[t,(k,o)], one block Z̄ ∈ R^{s×dc}.
    Written against the Head protocol only, so the library's solver and certificate apply."""

    name = "token-weights"

    @property
    def block_shape(self):
        return (self.s, self.d * self.c)

    def lift(self, X, design=None):
        return {"X": X}

    def tokens(self, Z, data):
        raise NotImplementedError("pooled targets only")

    def pooled(self, Z, data):
        return torch.einsum("ntk,tko->no", data["X"], Z[0].reshape(self.s, self.d, self.c))


def solve_quietly(problem):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ca.ConvergenceWarning)  # may stall near 1e-8 gap
        return ca.solve(problem, tol=1e-10, max_iter=20_000)


def test_linear_mixer_collapses_to_token_weights_with_beta_sqrt_s():
    """With mean pooling, linear Mixer(β) ≡ min over Z̄ ∈ R^{s×dc} of
    mean CE(Σ_{t,k} X[t,k] Z̄[t,(k,o)]) + β√s ‖Z̄‖_*  (token mixing collapses)."""
    X, y = tokens(11, n=N, s=S, d=D), labels(11, n=N, c=C)
    mixer = solve_quietly(ca.Problem(ca.heads.Mixer(), X, y, BETA))
    collapsed = solve_quietly(ca.Problem(TokenWeights(), X, y, BETA * math.sqrt(S)))
    assert mixer.objective == pytest.approx(collapsed.objective, rel=1e-8)
    # the optimal Mixer block repeats Z̄ for every query: Z = 1_s ⊗ Z̄
    Z = mixer.blocks[0].reshape(S, S * D * C)
    torch.testing.assert_close(Z, Z.mean(0).expand_as(Z), atol=1e-5, rtol=0)


def test_collapsed_program_against_cvxpy():
    """The collapsed program itself, solved independently by CVXPY."""
    X, y = tokens(11, n=N, s=S, d=D), labels(11, n=N, c=C)
    collapsed = solve_quietly(ca.Problem(TokenWeights(), X, y, BETA * math.sqrt(S)))
    Zbar, b = cp.Variable((S, D * C)), cp.Variable(C)
    Xf = X.numpy().reshape(N, S * D)
    logits = Xf @ cp.reshape(Zbar, (S * D, C), order="C") + np.ones((N, 1)) @ cp.reshape(
        b, (1, C), order="C")
    onehot = np.eye(C)[y.numpy()]
    loss = (cp.sum(cp.log_sum_exp(logits, axis=1)) - cp.sum(cp.multiply(onehot, logits))) / N
    reference = cp.Problem(cp.Minimize(loss + BETA * math.sqrt(S) * cp.normNuc(Zbar)))
    reference.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert collapsed.objective == pytest.approx(reference.value, rel=1e-6)
