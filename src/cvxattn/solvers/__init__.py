"""Solvers: ``solve(problem, method=...)`` returns a certified :class:`Solution`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import replace
from numbers import Real

import numpy as np
import torch

from ..checks import check_bool, check_integer, is_integer
from ..problem import Problem
from .certificate import Certificate, certify
from .factorized import factorized
from .fista import fista
from .memory import MemoryBudgetError, Plan, plan
from .path import RegularizationPath, solve_path
from .reference import solve_cvxpy
from .smooth import hybrid
from .solution import (CertificateInfo, Checkpoint, ConvergenceWarning, Solution, Status,
                       balanced_heads, finish_in_float64)

__all__ = ["solve", "solve_path", "RegularizationPath", "certify", "Certificate", "Solution",
           "Status", "CertificateInfo", "Checkpoint", "ConvergenceWarning", "METHODS",
           "MemoryBudgetError", "Plan", "plan"]

METHODS = ("auto", "fista", "hybrid", "factorized", "cvxpy")


def solve(problem: Problem, method: str = "auto", tol: float = 1e-6,
          max_iter: int = 5000, init: "Solution | tuple[torch.Tensor, torch.Tensor] | None" = None,
          verbose: bool = False, seed: int = 0, memory_budget: float | None = None,
          callback: Callable[[Checkpoint], object] | None = None) -> Solution:
    """Solve ``problem`` to a relative duality gap ≤ ``tol`` (SPEC.md §4).

    method: ``"fista"`` (accelerated proximal gradient on the blocks Z), ``"hybrid"`` (FISTA,
    and Newton's method or L-BFGS wherever the blocks all have full rank and the nuclear norm
    is smooth: the small-β end of a path), ``"factorized"`` (L-BFGS on the network's heads
    with rank growth; never forms Z; chunked passes), ``"cvxpy"`` (generic conic solver, small
    problems only: a reference), or ``"auto"`` ("hybrid" while the dense blocks fit in memory
    and their SVDs are cheap, else factorized; see :func:`cvxattn.solvers.plan`; the reason is
    ``Solution.method_reason``). ``init``: a previous Solution or (Z, b) to warm-start.
    ``max_iter`` counts iterations (L-BFGS iterations for the factorized solver).
    ``memory_budget``: bytes the solve may use (default 60% of the memory available now); a
    request whose estimated peak exceeds it raises :class:`MemoryBudgetError` before
    allocating. ``seed`` fixes the factorized solver's random Lanczos starts. ``callback``:
    called with every :class:`Checkpoint` as it is recorded (the entries of
    ``Solution.history``), e.g. to log the progress of a run that may be interrupted.

    >>> import numpy as np, cvxattn as ca
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(20, 6, 5)), np.arange(20) % 3
    >>> sol = ca.solve(ca.Problem(ca.heads.SelfAttention(), X, y, beta=0.1), tol=1e-8)
    >>> sol.status, sol.gap <= 1e-8
    ('optimal', True)
    """
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if not isinstance(problem, Problem):
        raise TypeError(f"problem: expected a cvxattn.Problem, got {type(problem).__name__}")
    check_tol(tol)
    if not is_integer(max_iter, 1):
        raise ValueError(f"max_iter: expected a positive integer, got {max_iter!r}")
    check_integer(seed, "seed")
    check_bool(verbose, "verbose")
    collapsed = problem.collapsed() if method in ("auto", "fista", "hybrid") else None
    if collapsed is not None:
        return _solve_collapsed(problem, *collapsed, method, tol, int(max_iter), init,
                                verbose, seed, memory_budget, callback)
    chosen = plan(problem, method, memory_budget)
    return replace(_solve_planned(problem, chosen, tol, int(max_iter), init, verbose, seed,
                                  callback), method_reason=chosen.reason)


def check_tol(tol, name: str = "tol") -> None:
    """ValueError unless ``tol`` is a number in (0, 1): a relative duality gap of 1 or more
    proves nothing (P − D ≥ |P| holds at the zero solution already), so a solve asked for it
    would report "optimal" for any point."""
    if not (isinstance(tol, Real) and not isinstance(tol, bool) and math.isfinite(tol)
            and 0 < tol < 1):
        raise ValueError(f"{name}: expected a relative gap in (0, 1), got {tol!r}")


def _solve_planned(problem: Problem, chosen: Plan, tol: float, max_iter: int, init,
                   verbose: bool, seed: int, callback) -> Solution:
    if chosen.method == "cvxpy":
        return solve_cvxpy(problem, verbose=verbose)
    if chosen.method == "factorized":
        if isinstance(init, Solution) and init.heads is not None:
            start = _checked_heads(problem, *init.heads, init.intercept)
        else:  # blocks (Z, b), split into balanced heads
            blocks = _checked_blocks(problem, init)
            start = None if blocks is None else (
                *problem.head.heads_from_blocks(blocks[0]), blocks[1])
        return factorized(problem, tol=tol, max_iter=max_iter, init=start, seed=seed,
                          chunk_size=chosen.chunk_size, cache=chosen.cache,
                          krylov_steps=chosen.krylov_steps, verbose=verbose,
                          callback=callback)
    dense = fista if chosen.method == "fista" else hybrid
    return _finished_in_float64(dense, problem, tol, max_iter, _checked_blocks(problem, init),
                                verbose, callback)


def _solve_collapsed(problem: Problem, small: Problem, collapse, method, tol, max_iter, init,
                     verbose, seed, memory_budget, callback) -> Solution:
    """Solve the smaller program that ``problem`` equals under mean pooling (SPEC.md §3
    identity 3) and return it as the full program's solution: its objective, lower bound and
    gap are the full program's (the collapse maps the blocks with the same loss and nuclear
    norm, and the dual-feasibility conditions coincide), its heads are expanded to the full
    head's, and Z is formed from them only on demand."""
    blocks = _checked_blocks(problem, init)
    start = None if blocks is None else (collapse.collapse(blocks[0]), blocks[1])
    found = solve(small, method=method, tol=tol, max_iter=max_iter, init=start,
                  verbose=verbose, seed=seed, memory_budget=memory_budget, callback=callback)
    heads = collapse.expand(*balanced_heads(collapse.head, found.heads, found.dense))
    return Solution.of(problem, heads=heads, intercept=found.intercept,
                       objective=found.objective, lower_bound=found.lower_bound, gap=found.gap,
                       status=found.status, method=found.method, n_iter=found.n_iter,
                       seconds=found.seconds, certificate=replace(
                           found.certificate, collapse=collapse.description),
                       history=found.history, method_reason=found.method_reason,
                       n_passes=found.n_passes)


def _finished_in_float64(run, problem: Problem, tol: float, max_iter: int, init, verbose: bool,
                         callback=None) -> Solution:
    """``run`` (a dense-block solver: FISTA, the hybrid) in the problem's precision; a float32
    run is finished in float64 from where it stopped, within the same iteration limit, as
    :func:`.solution.finish_in_float64` says (the factorized solver applies the same policy
    inside its run, switching its passes' arithmetic)."""
    if problem.X.dtype != torch.float32:
        return run(problem, tol=tol, max_iter=max_iter, init=init, verbose=verbose,
                   callback=callback)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = run(problem, tol=tol, max_iter=max_iter, init=init, verbose=verbose,
                    callback=callback)
    finishing = finish_in_float64(problem.X.dtype, first.status, tol, first.n_iter, max_iter)
    for w in caught:  # the stall's own warning is moot once the float64 run goes on
        if not (finishing and issubclass(w.category, ConvergenceWarning)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not finishing:
        return first

    def continued(c: Checkpoint) -> Checkpoint:  # counted from the float32 run's start
        return replace(c, iteration=c.iteration + first.n_iter, seconds=c.seconds + first.seconds)

    # (at least one iteration, so that an optimal point found at the limit is still proven)
    finish = run(problem.astype(torch.float64), tol=tol,
                 max_iter=max(max_iter - first.n_iter, 1),
                 init=(first.blocks.double(), first.intercept.double()), verbose=verbose,
                 callback=None if callback is None else lambda c: callback(continued(c)))
    history = first.history + tuple(continued(c) for c in finish.history)
    return replace(finish, n_iter=first.n_iter + finish.n_iter,
                   seconds=first.seconds + finish.seconds, history=history,
                   n_passes=first.n_passes + finish.n_passes,
                   certificate=replace(finish.certificate, precision=(
                       f"float32 until iteration {first.n_iter} ({first.status} at gap "
                       f"{first.gap:.1e} in float32), then float64")))


def _checked_blocks(problem: Problem, init):
    """``init`` (a Solution, or (Z, b) as tensors or arrays) as finite blocks and intercept of
    ``problem``'s shapes, dtype and device."""
    if init is None:
        return None
    if isinstance(init, Solution):
        init = (init.blocks, init.intercept)
    if not (isinstance(init, (tuple, list)) and len(init) == 2):
        raise ValueError(f"init: expected a Solution or a pair (Z, b), got "
                         f"{type(init).__name__}" + (f" of length {len(init)}"
                                                     if isinstance(init, (tuple, list)) else ""))
    Z0, b0 = problem.zeros()
    try:
        Z, b = (torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v).detach()
                for v in init)
    except (TypeError, ValueError) as error:
        raise ValueError(f"init: expected a pair of arrays (Z, b), got values that are not "
                         f"arrays ({error})") from None
    if tuple(Z.shape) != tuple(Z0.shape) or tuple(b.shape) != tuple(b0.shape):
        raise ValueError(f"init: expected blocks {tuple(Z0.shape)} and intercept "
                         f"{tuple(b0.shape)}, got {tuple(Z.shape)} and {tuple(b.shape)}")
    if not (Z.is_floating_point() or Z.dtype in (torch.int32, torch.int64)) \
            or not bool(torch.isfinite(Z).all() and torch.isfinite(b).all()):
        raise ValueError("init: expected finite real blocks and intercept, got NaN, inf or "
                         f"dtype {Z.dtype}")
    return Z.to(Z0), b.to(b0)


def _checked_heads(problem: Problem, W1, W2, b):
    """A factorized Solution's heads, checked against ``problem``'s head shapes."""
    head = problem.head
    want = ((head.n_blocks, *head.w1_shape), (head.n_blocks, *head.w2_shape), (problem.c,))
    got = (tuple(W1.shape[:1] + W1.shape[2:]), tuple(W2.shape[:1] + W2.shape[2:]),
           tuple(b.shape))
    if got != want:
        raise ValueError(f"init: expected heads (G, r, *w1) (G, r, *w2) and intercept of "
                         f"{want} without r, got {got}")
    return W1, W2, b
