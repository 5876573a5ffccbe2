"""Hyperparameters picked on validation: grids widened while the pick is on their edge, and a
pick still on an edge flagged (cvxattn.protocol)."""

from __future__ import annotations

import math

import pytest

import cvxattn as ca
from cvxattn.protocol import _beta_path, choose_on_grid
from tests.helpers import labels, tokens


def peaked(at: float):
    """A validation score with its maximum at ``at`` (log scale)."""
    return lambda **values: (-abs(math.log10(next(iter(values.values()))) - math.log10(at)),
                             None)


def test_a_pick_on_the_edge_widens_the_grid_until_it_is_interior():
    choice = choose_on_grid({"C": [1e-2, 1e-1, 1.0]}, peaked(1e2), extensions=3)
    assert choice.values == {"C": 1e2} and choice.edge == ()
    assert [point["C"] for point, _ in choice.tried] == [1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3]
    assert "C = 100 picked on validation" in choice.describe()


def test_a_pick_still_on_the_edge_is_flagged():
    choice = choose_on_grid({"C": [1e-2, 1e-1, 1.0]}, peaked(1e-6), extensions=2)
    assert choice.values == {"C": 1e-4} and choice.edge == ("C",)
    assert "AT THE EDGE of its grid: C" in choice.describe()
    assert choose_on_grid({"C": [1.0]}, peaked(1e-6)).edge == ()  # one value: no grid


def test_two_hyperparameters_widen_independently_and_ties_go_the_preferred_way():
    def score(lr, decay):
        return (-abs(math.log10(lr) + 1) - abs(math.log10(decay) - 0), None)

    choice = choose_on_grid({"lr": [1e-3, 1e-2], "decay": [1e-4, 1e-2, 1.0]}, score)
    assert choice.values == {"lr": 0.1, "decay": 1.0} and choice.edge == ()
    assert {point["lr"] for point, _ in choice.tried} == {1e-3, 1e-2, 0.1, 1.0}
    flat = choose_on_grid({"C": [0.1, 1.0, 10.0]}, lambda C: (0.5, None), extensions=0,
                          prefer={"C": -1})
    assert flat.values == {"C": 0.1}  # every C ties: the smaller one, more regularization


@pytest.mark.parametrize("extensions, edge", [(2, True), (4, False)])
def test_the_beta_path_goes_on_below_its_grid_while_the_smallest_beta_is_best(extensions,
                                                                              edge):
    problem = ca.Problem(ca.heads.MLP(), tokens(0), labels(0), beta=0.1)
    target = 1e-3  # the (synthetic) validation score peaks at β = 1e-3

    def score(solution):
        return -abs(math.log10(solution.beta) - math.log10(target))

    solved, best, at_edge = _beta_path(problem, [1e-1, 3e-2, 1e-2], score, None, extensions,
                                       "auto", 1e-4, 2000)
    betas = [b for b, _, _ in solved]
    assert betas == sorted(betas, reverse=True) and len(betas) == 3 + min(extensions, 3)
    assert math.isclose(solved[best][0], target, rel_tol=1e-9) and at_edge is edge
