"""Exact attributions (SPEC.md §7) of fitted heads: they add up to the logits, from a Solution,
a saved model and the network of to_network() alike; memory and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cvxattn as ca
from cvxattn.explain import ROLES, pair_contributions, token_contributions
from cvxattn.io import load_model, save_solution
from tests.helpers import C, D, N, S, labels, tokens

ATOL = 1e-10


@pytest.fixture
def solution(head):
    """Each of the ten programs fitted (to a loose tolerance: the identities hold anywhere)."""
    problem = ca.Problem(head, tokens(0), labels(0), beta=0.05)
    return ca.solve(problem, method="fista", tol=1e-4)


def test_token_contributions_reproduce_the_logits_for_every_role(solution):
    X = tokens(3)  # new tokens, not the training ones
    logits = solution.decision_function(X)
    for role in ROLES:
        T = token_contributions(solution, X, role)
        assert T.shape == (N, S, C)
        torch.testing.assert_close(T.mean(1) + solution.intercept, logits, atol=ATOL, rtol=0)


def test_pairs_sum_over_sources_to_the_token_contributions(solution):
    X = tokens(3)
    P = pair_contributions(solution, X)
    assert P.shape == (N, S, S, C)
    torch.testing.assert_close(P.sum(2), token_contributions(solution, X), atol=ATOL, rtol=0)
    torch.testing.assert_close(P.sum(1), token_contributions(solution, X, "source"),
                               atol=ATOL, rtol=0)


def test_the_network_and_a_saved_model_give_the_same_numbers(solution, tmp_path):
    X = tokens(4)
    network = solution.to_network()
    save_solution(solution, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    expected_T = token_contributions(solution, X, "shapley")
    expected_P = pair_contributions(solution, X)
    for other in (network, loaded):
        torch.testing.assert_close(token_contributions(other, X, "shapley"), expected_T,
                                   atol=ATOL, rtol=0)
        torch.testing.assert_close(pair_contributions(other, X), expected_P, atol=ATOL, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(token_contributions(network, X).mean(1)
                                   + network.intercept, network(X), atol=ATOL, rtol=0)


def test_a_factorized_solution_is_explained_from_its_heads():
    head = ca.heads.SelfAttention(activation="gated", n_gates=2, seed=1)
    problem = ca.Problem(head, tokens(0), labels(0), beta=0.05)
    solution = ca.solve(problem, method="factorized", tol=1e-4)
    assert solution.dense is None  # heads only
    X = tokens(5)
    P = pair_contributions(solution, X)
    torch.testing.assert_close(P.sum(2).mean(1) + solution.intercept,
                               solution.decision_function(X), atol=ATOL, rtol=0)
    dense = ca.heads.SelfAttention(activation="gated", n_gates=2, seed=1).bind(S, D, C)
    Z = solution.blocks
    torch.testing.assert_close(P, dense.pairs(Z, dense.lift(X, design=False)), atol=ATOL,
                               rtol=0)


def test_chunks_do_not_change_the_result():
    head = ca.heads.Mixer(activation="gated", n_gates=2, seed=1)
    solution = ca.solve(ca.Problem(head, tokens(0), labels(0), beta=0.05), tol=1e-4)
    X = tokens(6)
    whole = pair_contributions(solution, X)
    per_sample = head.bind(S, D, C).pair_elements(None) * 8  # bytes of one sample's work
    budget = N * S * S * C * 8 + 2 * per_sample  # the result and two samples at a time
    torch.testing.assert_close(pair_contributions(solution, X, memory_budget=budget), whole,
                               atol=ATOL, rtol=0)


def test_a_request_over_the_memory_budget_is_refused_before_allocating():
    solution = ca.solve(ca.Problem(ca.heads.MLP(), tokens(0), labels(0), beta=0.05), tol=1e-4)
    with pytest.raises(ca.MemoryBudgetError, match="pair contributions of 7 samples"):
        pair_contributions(solution, tokens(1), memory_budget=1000)
    with pytest.raises(ValueError, match="memory_budget: expected"):
        token_contributions(solution, tokens(1), memory_budget=-1)


def test_bad_input_is_refused_by_name():
    solution = ca.solve(ca.Problem(ca.heads.MLP(), tokens(0), labels(0), beta=0.05), tol=1e-4)
    with pytest.raises(ValueError, match=r"X: expected tokens of shape \(n, 10, 4\)"):
        token_contributions(solution, tokens(1, d=5))
    with pytest.raises(ValueError, match="X: expected a 3-D array"):
        pair_contributions(solution, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="X: expected finite values"):
        token_contributions(solution, np.full((2, S, D), np.nan))
    with pytest.raises(ValueError, match="role: expected one of"):
        token_contributions(solution, tokens(1), role="key")
    with pytest.raises(TypeError, match="model: expected a cvxattn.Solution"):
        token_contributions(object(), tokens(1))


def shapley_values(logit, s):
    """Each token's Shapley value of ``logit(kept)`` (kept: a tuple of booleans), by the
    subset formula φ_t = Σ_{S ∌ t} |S|! (s − |S| − 1)! / s! · (v(S ∪ t) − v(S))."""
    from itertools import product
    from math import factorial

    values = {kept: logit(kept) for kept in product((False, True), repeat=s)}
    phi = np.zeros(s)
    for kept, value in values.items():
        size = sum(kept)
        for t in range(s):
            if not kept[t]:
                weight = factorial(size) * factorial(s - size - 1) / factorial(s)
                phi[t] += weight * (values[kept[:t] + (True,) + kept[t + 1:]] - value)
    return phi


@pytest.mark.parametrize("head", [ca.heads.SelfAttention(), ca.heads.Mixer(),
                                  ca.heads.FNO(grid=(2, 3)), ca.heads.BlockFNO(groups=2,
                                                                               grid=(2, 3))],
                         ids=["attention", "mixer", "fno", "bfno"])
def test_the_shapley_role_is_each_tokens_shapley_value_for_zero_reference_tokens(head):
    """For a linear head, with missing tokens set to zero, brute force over all 2^s subsets."""
    s, d, c = 6, 4, 6
    X = tokens(0, n=12, s=s, d=d)
    solution = ca.solve(ca.Problem(head, X, labels(0, n=12, c=c), beta=0.05), tol=1e-6)
    x = tokens(7, n=1, s=s, d=d)
    shares = token_contributions(solution, x, "shapley")[0] / s  # (s, c): Σ_t + b = logits

    def logit(kept):
        kept = torch.tensor(kept, dtype=torch.float64)[None, :, None]
        return solution.decision_function(x * kept)[0, 2].item()

    np.testing.assert_allclose(shares[:, 2].numpy(), shapley_values(logit, s), atol=1e-12)
