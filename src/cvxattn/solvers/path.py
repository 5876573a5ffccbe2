"""A regularization path: one problem solved for several β, from large to small, each solve
warm-started from the previous solution.

A larger β has a smaller, lower-rank optimum that is cheap to certify, and the optimum moves
continuously with β, so the previous solution is a good start for the next (the heads of a
factorized solution are reused as they are, dense blocks as blocks). The β problems share the
head, the data and its lifted form (:meth:`Problem.with_beta`), so nothing is lifted twice.

With a ``score`` (e.g. validation accuracy, higher is better) the path can stop early: after
``patience`` values of β in a row without a better score than the best so far. Values of β
whose solution is zero do not count: above β_max = max_g ‖∇_g f(0, b*)‖_op every solution is
the intercept alone, the same model, so a path that starts there would otherwise stop before
it reaches a β that fits anything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

from ..problem import Problem
from .solution import Solution

__all__ = ["RegularizationPath", "solve_path", "checked_path_betas"]


@dataclass(frozen=True)
class RegularizationPath:
    """The solutions of a path, in the order solved (largest β first).

    ``betas`` and ``solutions`` are as long as the path went (shorter than asked when it
    stopped early, ``stopped_early``); ``scores`` holds ``score(solution)`` of each when a
    score was given; ``seconds`` the wall time of each solve.
    """

    betas: tuple[float, ...]
    solutions: tuple[Solution, ...]
    scores: tuple[float, ...] | None
    seconds: tuple[float, ...]
    stopped_early: bool = False

    @property
    def best(self) -> int | None:
        """Index of the best score (ties: the larger β, which comes first), or None without
        scores."""
        if self.scores is None:
            return None
        return max(range(len(self.scores)), key=lambda k: (self.scores[k], -k))

    def __len__(self) -> int:
        return len(self.solutions)


def checked_path_betas(betas) -> tuple[float, ...]:
    """``betas`` (one or several) as distinct finite numbers > 0, largest first."""
    values = (betas,) if isinstance(betas, Real) else tuple(betas)
    if not values or not all(isinstance(b, Real) and not isinstance(b, bool)
                             and math.isfinite(b) and b > 0 for b in values) \
            or len(set(values)) != len(values):
        raise ValueError(f"betas: expected distinct finite numbers > 0, got {values}")
    return tuple(sorted((float(b) for b in values), reverse=True))


def solve_path(problem: Problem, betas: Sequence[float], *,
               score: Callable[[Solution], float] | None = None, patience: int | None = None,
               method: str = "auto", tol: float = 1e-6, max_iter: int = 5000, init=None,
               seed: int = 0, memory_budget: float | None = None,
               callback=None) -> RegularizationPath:
    """Solve ``problem`` at every β of ``betas``, largest first, each solve warm-started from
    the previous one (the first from ``init``, if given). ``problem.beta`` itself is not
    solved unless it is among ``betas``.

    ``score``: called with each solution (higher is better), e.g. accuracy on a validation
    split; ``patience``: with a score, stop after this many β in a row that do not beat the
    best score so far (not counting β whose solution is zero). The other arguments go to :func:`cvxattn.solve` for every β.

    >>> import numpy as np, cvxattn as ca
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(30, 6, 3)), np.arange(30) % 3
    >>> problem = ca.Problem(ca.heads.MLP(activation="gated", n_gates=4), X, y, beta=1.0)
    >>> path = ca.solve_path(problem, [1e-1, 1e-2, 3e-2], tol=1e-6)
    >>> path.betas, [s.status for s in path.solutions]
    ((0.1, 0.03, 0.01), ['optimal', 'optimal', 'optimal'])
    """
    from . import solve  # the package's solve, which chooses the method

    if not isinstance(problem, Problem):
        raise TypeError(f"problem: expected a cvxattn.Problem, got {type(problem).__name__}")
    betas = checked_path_betas(betas)
    if score is not None and not callable(score):
        raise TypeError(f"score: expected a callable or None, got {type(score).__name__}")
    if patience is not None:
        if score is None:
            raise ValueError("patience: expected None without a score (early stopping "
                             "compares scores)")
        if not isinstance(patience, Integral) or isinstance(patience, bool) or patience < 1:
            raise ValueError(f"patience: expected a positive integer or None, got "
                             f"{patience!r}")
    solutions, scores, seconds = [], [], []
    current, stopped = problem, False
    for beta in betas:
        current = current.with_beta(beta)  # shares the lifted data of the previous β
        start = time.perf_counter()
        init = solve(current, method=method, tol=tol, max_iter=max_iter, init=init,
                     seed=seed, memory_budget=memory_budget, callback=callback)
        seconds.append(time.perf_counter() - start)
        solutions.append(init)
        if score is not None:
            scores.append(float(score(init)))
            best = max(range(len(scores)), key=lambda k: (scores[k], -k))
            since = sum(1 for sol in solutions[best + 1:] if sol.n_heads > 0)
            if patience is not None and since >= patience and len(solutions) < len(betas):
                stopped = True
                break
    return RegularizationPath(betas[:len(solutions)], tuple(solutions),
                              tuple(scores) if score is not None else None, tuple(seconds),
                              stopped)
