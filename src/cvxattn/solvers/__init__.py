"""Solvers: ``solve(problem, method=...)`` returns a certified :class:`Solution`."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from ..problem import Problem
from .certificate import Certificate, certify
from .factorized import factorized
from .fista import fista
from .memory import MemoryBudgetError, Plan, plan
from .reference import solve_cvxpy
from .solution import Checkpoint, ConvergenceWarning, Solution

__all__ = ["solve", "certify", "Certificate", "Solution", "Checkpoint", "ConvergenceWarning",
           "METHODS", "MemoryBudgetError", "Plan", "plan"]

METHODS = ("auto", "fista", "factorized", "cvxpy")


def solve(problem: Problem, method: str = "auto", tol: float = 1e-6,
          max_iter: int = 5000, init: "Solution | tuple[torch.Tensor, torch.Tensor] | None" = None,
          verbose: bool = False, seed: int = 0, memory_budget: float | None = None
          ) -> Solution:
    """Solve ``problem`` to a relative duality gap ≤ ``tol`` (SPEC.md §4).

    method: ``"fista"`` (accelerated proximal gradient on the blocks Z), ``"factorized"``
    (L-BFGS on the network's heads with rank growth; never forms Z; chunked passes),
    ``"cvxpy"`` (generic conic solver, small problems only: a reference), or ``"auto"``
    (FISTA while its dense blocks are small and fit in memory, else factorized; see
    :func:`cvxattn.solvers.plan`). ``init``: a previous Solution or (Z, b) to warm-start.
    ``max_iter`` counts iterations (L-BFGS iterations for the factorized solver).
    ``memory_budget``: bytes the solve may use (default 60% of the memory available now); a
    request whose estimated peak exceeds it raises :class:`MemoryBudgetError` before
    allocating. ``seed`` fixes the factorized solver's random Lanczos starts.

    >>> import numpy as np, cvxattn as ca
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(20, 6, 5)), np.arange(20) % 3
    >>> sol = ca.solve(ca.Problem(ca.heads.SelfAttention(), X, y, beta=0.1), tol=1e-8)
    >>> sol.status, sol.gap <= 1e-8
    ('optimal', True)
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if not isinstance(problem, Problem):
        raise TypeError(f"problem: expected a cvxattn.Problem, got {type(problem).__name__}")
    if not (isinstance(tol, Real) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: expected a finite number > 0, got {tol!r}")
    if not isinstance(max_iter, Integral) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter: expected a positive integer, got {max_iter!r}")
    chosen = plan(problem, method, memory_budget)
    if chosen.method == "cvxpy":
        return solve_cvxpy(problem, verbose=verbose)
    if chosen.method == "factorized":
        return factorized(problem, tol=tol, max_iter=int(max_iter),
                          init=_heads_init(problem, init), seed=seed,
                          chunk_size=chosen.chunk_size, cache=chosen.cache,
                          krylov_steps=chosen.krylov_steps, verbose=verbose)
    if isinstance(init, Solution):
        init = (init.blocks, init.intercept)
    if init is not None:
        Z0, b0 = problem.zeros()
        if tuple(init[0].shape) != tuple(Z0.shape) or tuple(init[1].shape) != tuple(b0.shape):
            raise ValueError(f"init: expected blocks {tuple(Z0.shape)} and intercept "
                             f"{tuple(b0.shape)}, got {tuple(init[0].shape)} and "
                             f"{tuple(init[1].shape)}")
        init = (init[0].to(Z0), init[1].to(b0))
    return fista(problem, tol=tol, max_iter=int(max_iter), init=init, verbose=verbose)


def _heads_init(problem: Problem, init):
    """``init`` for the factorized solver: heads (W1, W2, b) from a Solution or from (Z, b)."""
    if init is None:
        return None
    if isinstance(init, Solution):
        if init.heads is not None:
            return (*init.heads, init.intercept)
        init = (init.blocks, init.intercept)
    Z0, b0 = problem.zeros()
    if tuple(init[0].shape) != tuple(Z0.shape) or tuple(init[1].shape) != tuple(b0.shape):
        raise ValueError(f"init: expected blocks {tuple(Z0.shape)} and intercept "
                         f"{tuple(b0.shape)}, got {tuple(init[0].shape)} and "
                         f"{tuple(init[1].shape)}")
    W1, W2 = problem.head.heads_from_blocks(init[0].to(Z0))
    return W1, W2, init[1].to(b0)
