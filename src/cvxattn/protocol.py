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
from numbers import Integral, Real
from typing import Protocol

import numpy as np
import torch

from .heads.base import Head
from .problem import Problem
from .solvers import ConvergenceWarning, Solution, solve, solve_path

__all__ = ["Split", "stratified_subset", "solve_recorded", "accuracy", "network_parameters",
           "fit_convex", "recorded", "is_positive", "is_count", "checked_names", "checked_betas",
           "checked_gates"]


# ------------------------------------------------------- checks of the configurations
def is_positive(x) -> bool:
    """A finite real number > 0 (not a bool)."""
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def is_count(x) -> bool:
    """An integer ≥ 1 (not a bool)."""
    return isinstance(x, Integral) and not isinstance(x, bool) and x >= 1


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
                   method: str = "auto") -> tuple[Solution, list[str]]:
    """Solve, collecting the solver's ConvergenceWarning as notes (the status says it too)."""
    return recorded(lambda: solve(problem, method=method, tol=tol, max_iter=max_iter,
                                  init=init))


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


def fit_convex(head: Head, data: Split, betas: Sequence[float], tol: float,
               select_tol: float, max_iter: int, method: str = "auto",
               n_classes: int | None = None, dtype: torch.dtype = torch.float64
               ) -> tuple[dict, Solution]:
    """One head fitted by the protocol above; returns its table row and the final solution.

    The row holds β (and the validation accuracy when it was picked), train and test
    accuracy, the certificate (objective, lower bound, relative gap, status, how the spectral
    norms were computed), the heads and parameters of the equivalent network, iterations,
    seconds of the final solve and of the β path, the solver's notes, the final solve's
    history as (seconds, gap) pairs, and the path as (β, heads) pairs (empty for one β).
    ``dtype``: the arithmetic of the solves.
    """
    betas = sorted({float(b) for b in betas}, reverse=True)  # warm-started path: largest first
    init, notes, val_acc, select_seconds, path = None, [], None, None, []
    beta = betas[0]
    if len(betas) > 1:
        if data.fit_mask is None:
            raise ValueError("data: several β need a validation split (fit_mask), got none")
        start = time.perf_counter()
        fit, val = data.fit_mask, ~data.fit_mask
        problem = Problem(head, data.X_train[fit], data.y_train[fit], beta=betas[0],
                          n_classes=n_classes, dtype=dtype)
        found, _ = recorded(lambda: solve_path(
            problem, betas, score=lambda s: accuracy(s, data.X_train[val], data.y_train[val]),
            method=method, tol=select_tol, max_iter=max_iter))
        notes += [f"β path {b:g}: stopped with status {s.status} at relative gap {s.gap:.1e} "
                  f"> {select_tol:g}" for b, s in zip(found.betas, found.solutions)
                  if s.status != "optimal"]
        path = [[b, s.n_heads] for b, s in zip(found.betas, found.solutions)]
        val_acc, beta = found.scores[found.best], found.betas[found.best]  # ties: larger β
        init = found.solutions[found.best]
        select_seconds = time.perf_counter() - start
    start = time.perf_counter()
    problem = Problem(head, data.X_train, data.y_train, beta=beta, n_classes=n_classes,
                      dtype=dtype)
    solution, messages = solve_recorded(problem, tol, max_iter, init, method)
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
        "path": path,
    }
    return row, solution
