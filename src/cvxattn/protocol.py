"""The paper's protocol for one convex head (SPEC.md §6), shared by ``cvxattn digits`` and
``cvxattn table``.

With one β the head is solved on the whole training set to a certified relative duality gap
≤ ``tol``. With several, β is picked on a validation split carved from the training set: a
warm-started path from the largest β down is solved on the rest (the *fit* part) to
``select_tol``; the β with the best validation accuracy (ties: the larger β) is then refitted
on the whole training set to ``tol``, warm-started from its path solution.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Protocol

import numpy as np
import torch

from .checks import is_integer
from .heads.base import Head
from .problem import Problem
from .solvers import ConvergenceWarning, Solution, solve, solve_path

__all__ = ["Split", "GridChoice", "choose_on_grid", "stratified_subset", "solve_recorded",
           "accuracy", "network_parameters",
           "fit_convex", "recorded", "is_positive", "is_count", "checked_names", "checked_betas",
           "checked_gates"]


# ------------------------------------------------------- checks of the configurations
def is_positive(x) -> bool:
    """A finite real number > 0 (not a bool)."""
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def is_count(x) -> bool:
    """An integer ≥ 1 (not a bool)."""
    return is_integer(x, 1)


def checked_names(name: str, value, choices: Sequence[str]) -> tuple[str, ...]:
    """``value`` (one name or several) as a tuple of distinct names from ``choices``."""
    value = (value,) if isinstance(value, str) else tuple(value)
    if not value or any(v not in choices for v in value) or len(set(value)) != len(value):
        raise ValueError(f"{name}: expected distinct names from {tuple(choices)}, got {value}")
    return value


def checked_betas(value) -> tuple[float, ...]:
    """``value`` (one β or several) as a tuple of distinct finite floats > 0."""
    beta = (value,) if isinstance(value, Real) else tuple(value)
    if not beta or not all(is_positive(b) for b in beta) or len(set(beta)) != len(beta):
        raise ValueError(f"beta: expected distinct finite numbers > 0, got {beta}")
    return tuple(float(b) for b in beta)


def checked_gates(value, defaults: dict[str, int], heads: Sequence[str]) -> dict[str, int]:
    """HEAD=M pairs ``value`` merged over ``defaults``; every HEAD in ``heads``, M ≥ 1."""
    gates = dict(value)
    bad = {k: v for k, v in gates.items() if k not in heads or not is_count(v)}
    if bad:
        raise ValueError(f"n_gates: expected HEAD=M with HEAD in {tuple(heads)} and M a "
                         f"positive integer, got {bad}")
    return {**defaults, **gates}


@dataclass(frozen=True)
class GridChoice:
    """The hyperparameters picked on validation by :func:`choose_on_grid`: ``values`` (name →
    value), their ``score``, every point ``tried`` as (values, score), and ``edge``: the names
    whose picked value still lies on an edge of the values tried, after the extensions."""

    values: dict
    score: float
    tried: tuple
    edge: tuple[str, ...]
    result: object = None  # what ``evaluate`` returned at the picked point
    results: tuple = ()  # (values, what ``evaluate`` returned) at every point tried

    def describe(self) -> str:
        grids = {name: sorted({point[name] for point, _ in self.tried}) for name in self.values}
        picked = ", ".join(f"{name} = {value:g}" for name, value in self.values.items())
        ranges = "; ".join(f"{name} in {_span(values)}" for name, values in grids.items())
        flag = (f"; AT THE EDGE of its grid: {', '.join(self.edge)}" if self.edge else "")
        return f"{picked} picked on validation ({ranges}){flag}"


def _span(values) -> str:
    return (f"{{{', '.join(f'{v:g}' for v in values)}}}" if len(values) <= 4
            else f"{values[0]:g} … {values[-1]:g} ({len(values)} values)")


def choose_on_grid(grids: dict[str, Sequence[float]], evaluate, factor: float = 10.0,
                   extensions: int = 2, prefer: dict[str, int] | None = None) -> GridChoice:
    """Pick hyperparameters on validation, and widen the grid where the pick is on its edge.

    ``evaluate(**values)`` returns (validation score, anything); every point of the product
    of ``grids`` is evaluated. Then, up to ``extensions`` times, each hyperparameter whose
    best value is the smallest (largest) tried gets one more value, ``factor`` times smaller
    (larger), evaluated with the others at their best. ``prefer``: name → +1 or −1, which way
    ties go (e.g. −1: the smaller C, more regularization; default +1). A pick still on an edge
    afterwards is reported in ``edge`` (the table flags it).
    """
    import itertools

    prefer = prefer or {}
    names = list(grids)
    tried: dict[tuple, tuple[float, object]] = {}

    def run(point: tuple) -> None:
        if point not in tried:
            score, result = evaluate(**dict(zip(names, point)))
            tried[point] = (float(score), result)

    def best() -> tuple:
        return max(tried, key=lambda p: (tried[p][0], *(prefer.get(n, 1) * v
                                                         for n, v in zip(names, p))))

    for point in itertools.product(*(sorted(grids[n]) for n in names)):
        run(point)
    for _ in range(extensions):
        top, grown = best(), False
        for k, name in enumerate(names):
            values = sorted({p[k] for p in tried})
            if len(values) < 2 or values[0] < top[k] < values[-1]:
                continue
            new = top[k] / factor if top[k] == values[0] else top[k] * factor
            run(top[:k] + (new,) + top[k + 1:])
            grown = True
        if not grown:
            break
    top = best()
    edge = tuple(name for k, name in enumerate(names)
                 if len({p[k] for p in tried}) > 1
                 and top[k] in (min(p[k] for p in tried), max(p[k] for p in tried)))
    ordered = sorted(tried.items())
    return GridChoice(dict(zip(names, top)), tried[top][0],
                      tuple((dict(zip(names, p)), s) for p, (s, _) in ordered),
                      edge, tried[top][1],
                      tuple((dict(zip(names, p)), r) for p, (_, r) in ordered))


class Split(Protocol):
    """Tokens and labels of one experiment; ``fit_mask`` (n_train,) marks the fit part (True)
    and the validation part (False) of the training set when β is picked on validation."""

    X_train: np.ndarray  # (n_train, s, d)
    y_train: np.ndarray  # (n_train,)
    X_test: np.ndarray
    y_test: np.ndarray
    fit_mask: np.ndarray | None


def stratified_subset(index: np.ndarray, y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` entries of ``index`` in the class proportions of ``y[index]``, sorted.

    Each class is shuffled (seeded); entries are taken in order of their quantile
    (rank + ½)/count within their class, so every class appears once size ≥ the number of
    classes (for classes of similar size), and a smaller subset is inside a larger one.

    >>> y = np.array([0, 0, 0, 0, 1, 1])
    >>> stratified_subset(np.arange(6), y, 3, seed=0).tolist()
    [2, 3, 5]
    """
    index = np.asarray(index)
    if not (is_count(size) and size <= len(index)):
        raise ValueError(f"size: expected an integer in [1, {len(index)}], got {size!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(index))
    labels = y[index[order]]
    quantile = np.empty(len(index))
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        quantile[members] = (np.arange(len(members)) + 0.5) / len(members)
    chosen = order[np.argsort(quantile, kind="stable")[:size]]
    return np.sort(index[chosen])


def solve_recorded(problem: Problem, tol: float, max_iter: int, init: Solution | None = None,
                   method: str = "auto", callback=None) -> tuple[Solution, list[str]]:
    """Solve, collecting the solver's ConvergenceWarning as notes (the status says it too)."""
    return recorded(lambda: solve(problem, method=method, tol=tol, max_iter=max_iter,
                                  init=init, callback=callback))


def recorded(call):
    """``call()``, with the solver's ConvergenceWarnings collected as notes instead of shown
    (each solution's status says it too); other warnings pass on. Returns (result, notes)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    notes = []
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            notes.append(str(w.message))
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, notes


def accuracy(solution: Solution, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``y`` predicted right from tokens ``X``."""
    return float((solution.predict(X).cpu().numpy() == y).mean())


def network_parameters(solution: Solution) -> int:
    """Trainable parameters of the network the solution equals: its heads' W1 and W2, plus
    the intercept (fixed gates are not trained, so not counted)."""
    head = solution.head
    per_head = math.prod(head.w1_shape) + math.prod(head.w2_shape)
    return solution.n_heads * per_head + (head.c if solution.fit_intercept else 0)


def _beta_path(problem: Problem, betas: list[float], score, patience: int | None,
               extensions: int, method: str, tol: float, max_iter: int, callback=None):
    """The warm-started path over ``betas`` (largest first) with early stopping, widened while
    its best β is the smallest or the largest solved: up to ``extensions`` more values, each
    √10 beyond. Returns (β, solution, score) of every solve in path order (largest first)
    and whether the best is still on an edge."""
    step = math.sqrt(10.0)
    found = solve_path(problem, betas, score=score, patience=patience, method=method,
                       tol=tol, max_iter=max_iter, callback=callback)
    solved = list(zip(found.betas, found.solutions, found.scores))
    stopped = found.stopped_early

    def best() -> int:  # ties: the larger β (earlier in the path)
        return max(range(len(solved)), key=lambda k: (solved[k][2], -k))

    for _ in range(extensions):
        k = best()
        if k == len(solved) - 1 and not stopped:  # the smallest β is best: go on down
            more = solve_path(problem, [solved[-1][0] / step], score=score, method=method,
                              tol=tol, max_iter=max_iter, init=solved[-1][1],
                              callback=callback)
            solved.append((more.betas[0], more.solutions[0], more.scores[0]))
        elif k == 0 and solved[0][1].n_heads > 0:  # the largest β is best and not zero: up
            more = solve_path(problem, [solved[0][0] * step], score=score, method=method,
                              tol=tol, max_iter=max_iter, callback=callback)
            solved.insert(0, (more.betas[0], more.solutions[0], more.scores[0]))
        else:
            break
    k = best()
    edge = (k == len(solved) - 1 and not stopped) or (k == 0 and solved[0][1].n_heads > 0)
    return solved, k, edge


def fit_convex(head: Head, data: Split, betas: Sequence[float], tol: float,
               select_tol: float, max_iter: int, method: str = "auto",
               n_classes: int | None = None, dtype: torch.dtype = torch.float64,
               patience: int | None = None, extensions: int = 0, callback=None
               ) -> tuple[dict, Solution]:
    """One head fitted by the protocol above; returns its table row and the final solution.

    The row holds β (and the validation accuracy when it was picked), train and test
    accuracy, the certificate (objective, lower bound, relative gap, status, how the spectral
    norms were computed), the heads and parameters of the equivalent network, iterations,
    seconds of the final solve and of the β path, the solver's notes, the final solve's
    history as (seconds, gap) pairs, and the path as (β, heads) pairs (empty for one β).
    ``dtype``: the arithmetic of the solves. ``patience``: stop the β path after this many
    values without a better validation accuracy; ``extensions``: how many values (√10 apart)
    the path may add beyond the grid while its best β is on the grid's edge; ``edge`` in the
    row says when it still is. ``callback``: passed to every solve (called at each of its
    certificate checkpoints).
    """
    betas = sorted({float(b) for b in betas}, reverse=True)  # warm-started path: largest first
    init, notes, val_acc, select_seconds, path, edge = None, [], None, None, [], ()
    beta = betas[0]
    if len(betas) > 1:
        if data.fit_mask is None:
            raise ValueError("data: several β need a validation split (fit_mask), got none")
        start = time.perf_counter()
        fit, val = data.fit_mask, ~data.fit_mask
        problem = Problem(head, data.X_train[fit], data.y_train[fit], beta=betas[0],
                          n_classes=n_classes, dtype=dtype)
        (solved, best, at_edge), _ = recorded(lambda: _beta_path(
            problem, betas, lambda s: accuracy(s, data.X_train[val], data.y_train[val]),
            patience, extensions, method, select_tol, max_iter, callback))
        notes += [f"β path {b:g}: stopped with status {s.status} at relative gap {s.gap:.1e} "
                  f"> {select_tol:g}" for b, s, _ in solved if s.status != "optimal"]
        path = [[b, s.n_heads, score] for b, s, score in solved]
        beta, init, val_acc = solved[best]
        tried = sorted(b for b, _, _ in solved)
        notes.append(f"β = {beta:g} picked on validation (β in {_span(tried)})"
                     + ("; AT THE EDGE of its grid" if at_edge else ""))
        edge = ("β",) if at_edge else ()
        select_seconds = time.perf_counter() - start
    start = time.perf_counter()
    problem = Problem(head, data.X_train, data.y_train, beta=beta, n_classes=n_classes,
                      dtype=dtype)
    solution, messages = solve_recorded(problem, tol, max_iter, init, method, callback)
    seconds = time.perf_counter() - start
    row = {
        "beta": beta, "val_acc": val_acc,
        "train_acc": accuracy(solution, data.X_train, data.y_train),
        "test_acc": accuracy(solution, data.X_test, data.y_test),
        "objective": solution.objective, "lower_bound": solution.lower_bound,
        "gap": solution.gap, "status": solution.status, "heads": solution.n_heads,
        "parameters": network_parameters(solution), "method": solution.method,
        "iterations": solution.n_iter, "certificate": solution.certificate,
        "seconds": seconds, "select_seconds": select_seconds, "notes": notes + messages,
        "history": [[c.seconds, c.gap] for c in solution.history],
        "path": path, "edge": edge,
    }
    return row, solution
