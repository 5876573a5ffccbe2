"""L-BFGS where the block nuclear norm is smooth, FISTA where it is not (``method="lbfgs"``).

‖Z_g‖_* = Σ_k σ_k(Z_g) is differentiable wherever Z_g has full rank min(p, q), with gradient
U_g V_gᵀ (its thin SVD). So near an optimum whose blocks all have full rank — the small-β end
of a regularization path, where FISTA needs tens of thousands of iterations on an
ill-conditioned loss — the program is a smooth one, and a quasi-Newton method converges in far
fewer iterations (Nocedal & Wright, ch. 7). Away from it (a rank-deficient optimum, a zero start)
proximal steps are what works. This solver alternates:

1. FISTA (``cvxattn.solvers.fista``) from the start, ``FISTA_ROUND`` iterations at a time;
2. whenever the iterate's blocks all have full rank (σ_min ≥ ``ENTER_RATIO`` · σ_max), L-BFGS
   with a strong-Wolfe line search (``torch.optim.LBFGS``) on the smooth objective, checking
   the certificate every ``check_every`` iterations; it hands back to FISTA when a block nears
   rank deficiency (σ_min < ``LEAVE_RATIO`` · σ_max) or the bounds stop moving.

Cross-entropy is invariant to adding one vector to every class's logits, and every head except
the block FNO with B > 1 groups adds a block's columns class by class (the class is the inner
axis of the columns, ``Head.class_columns``). Then P(Z Π) ≤ P(Z) for the projection Π = I ⊗ (I −
11ᵀ/c), so the optimum has Z_g(I ⊗ 1) = 0 and rank ≤ min(p, q − q/c): never "full rank" in the
plain sense. L-BFGS therefore works on M_g = Z_g B, Z_g = M_g Bᵀ, with B (q, k) an orthonormal
basis of that subspace, and ‖Z_g‖_* = ‖M_g‖_*.

Like FISTA it runs in centered coordinates (``Problem.centered``), and every lower bound is the
exact certificate of SPEC.md §4 (``certify``): the method changes how the point is found, never
how it is proven.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import replace

import torch

from ..problem import Problem
from .certificate import DualExtrapolation, certify, relative_gap
from .fista import fista
from .solution import (CertificateInfo, Checkpoint, ConvergenceWarning, Solution, Status,
                       no_progress, warn_unconverged)

__all__ = ["fista_lbfgs", "smooth_basis"]

FISTA_ROUND = 100  # FISTA iterations between tests of the rank
ENTER_RATIO = 1e-2  # σ_min / σ_max of every block above which L-BFGS takes over
LEAVE_RATIO = 1e-4  # ... and below which it hands back to FISTA
_MEMORY = 10  # L-BFGS history
_PATIENCE = 5  # checks without progress before L-BFGS hands back


def smooth_basis(problem: Problem) -> torch.Tensor:
    """B (q, k): an orthonormal basis of the columns the optimum's blocks live in. For
    cross-entropy on a head whose block columns are (…, class) (``Head.class_columns``) the
    complement of the per-class-group constants, k = q − q/c; otherwise all of them (B = I)."""
    q = problem.head.block_shape[1]
    eye = torch.eye(q, dtype=problem.X.dtype, device=problem.X.device)
    c = problem.c
    if problem.loss.name != "cross_entropy" or not problem.head.class_columns or q % c:
        return eye
    # columns ordered (group, class): Π = I_{q/c} ⊗ (I − 11ᵀ/c); its range, orthonormal
    centering = torch.eye(c, dtype=eye.dtype, device=eye.device) - 1.0 / c
    basis = torch.linalg.svd(centering)[0][:, :c - 1]  # (c, c−1)
    return torch.block_diag(*[basis] * (q // c))  # (q, q − q/c)


def _rank_ratio(M: torch.Tensor) -> float:
    """min over blocks of σ_min / σ_max (0 for a zero block)."""
    sigma = torch.linalg.svdvals(M)  # (G, k)
    top = sigma[:, 0]
    if float(top.min()) <= 0.0:
        return 0.0
    return float((sigma[:, -1] / top).min())


def _lbfgs(problem: Problem, Z: torch.Tensor, b: torch.Tensor, basis: torch.Tensor,
           tol: float, max_iter: int, check_every: int, start_time: float, first_iter: int,
           entry_gap: float, rival: tuple[float, int], verbose: bool, callback):
    """L-BFGS on (M, b') from blocks Z and a true intercept b, at gap ``entry_gap``. After a
    trial as long as FISTA's last round it hands back ("slower") when it has closed the gap by
    less, −Δ log(gap) per evaluation of the loss and gradient, than FISTA did per iteration
    (``rival``: that rate and the round's length). ``callback`` records every checkpoint.
    Returns (the best certificate, its blocks, the best lower bound, iterations, how it
    ended)."""
    beta = problem.beta
    M = (Z @ basis).detach().clone().requires_grad_(True)  # (G, p, k)
    shift = problem.output_mean(problem.outputs(Z))
    bias = (b + shift).detach().clone().requires_grad_(True)  # centered coordinates
    optimizer = torch.optim.LBFGS([M, bias], lr=1.0, max_iter=check_every,
                                  max_eval=4 * check_every, tolerance_grad=0.0,
                                  tolerance_change=0.0, history_size=_MEMORY,
                                  line_search_fn="strong_wolfe")

    def closure():
        with torch.no_grad():
            blocks = M @ basis.T
            outputs = problem.outputs(blocks)
        value, gZ, gb = problem.loss_and_gradient(blocks, bias, outputs, centered=True)
        with torch.no_grad():
            U, S, Vh = torch.linalg.svd(M, full_matrices=False)
            M.grad = gZ @ basis + beta * (U @ Vh)
            bias.grad = gb.clone()
            return value + beta * S.sum()

    history: list[Checkpoint] = []
    best = best_Z = None
    lower = -math.inf
    extrapolation = DualExtrapolation()
    evaluations: list[int] = []  # loss-and-gradient evaluations at each check
    n_iter, ending = 0, "max_iter"
    while n_iter < max_iter:
        optimizer.param_groups[0]["max_iter"] = min(check_every, max_iter - n_iter)
        before = optimizer.state[optimizer._params[0]].get("n_iter", 0)
        optimizer.step(closure)
        done = optimizer.state[optimizer._params[0]]["n_iter"] - before
        n_iter += done
        with torch.no_grad():
            blocks = M.detach() @ basis.T
            outputs = problem.outputs(blocks)
            cert = certify(problem, blocks, bias.detach() - problem.output_mean(outputs),
                           outputs)
        if best is None or cert.objective < best.objective:
            best, best_Z = cert, blocks
        lower = max(lower, cert.lower_bound, extrapolation.lower_bound(problem, cert))
        gap = relative_gap(best.objective, lower)
        history.append(Checkpoint(first_iter + n_iter, time.perf_counter() - start_time,
                                  cert.objective, lower, gap))
        callback(history[-1])
        if verbose:
            print(f"  lbfgs {first_iter + n_iter:6d}  P={cert.objective:.10e}  D={lower:.10e}  "
                  f"gap={gap:.2e}")
        if gap <= tol:
            ending = "optimal"
            break
        if done == 0 or _rank_ratio(M.detach()) < LEAVE_RATIO:
            ending = "left"  # the line search found no step, or a block nears rank deficiency
            break
        if no_progress(history, torch.finfo(M.dtype).eps, _PATIENCE):
            ending = "stalled"
            break
        # its rate over the last window as long as FISTA's round (from the entry at first)
        evaluations.append(optimizer.state[optimizer._params[0]]["func_evals"])
        if n_iter >= rival[1]:
            window = [k for k in range(len(history))
                      if history[-1].iteration - history[k].iteration >= rival[1]]
            then, used = ((history[window[-1]].gap, evaluations[-1] - evaluations[window[-1]])
                          if window else (entry_gap, evaluations[-1]))
            if _rate(then, gap, used) < rival[0]:
                ending = "slower"
                break
    return best, best_Z, lower, n_iter, ending


def _rate(before: float, after: float, steps: int) -> float:
    """−Δ log(gap) per step."""
    if steps <= 0 or before <= 0 or not math.isfinite(before):
        return 0.0
    return (math.log(before) - math.log(max(after, 1e-300))) / steps


def fista_lbfgs(problem: Problem, tol: float = 1e-6, max_iter: int = 5000,
                check_every: int = 10, init: tuple[torch.Tensor, torch.Tensor] | None = None,
                verbose: bool = False, callback=None) -> Solution:
    """Solve ``problem`` to a relative gap ≤ ``tol`` by FISTA and, where every block has full
    rank, L-BFGS (see the module's docstring). ``max_iter`` counts the iterations of both.

    FISTA runs in rounds of ``FISTA_ROUND`` iterations, doubling, with the rank tested after
    each. L-BFGS is entered at most twice, and keeps going only while it closes the gap at
    least as fast per evaluation as FISTA's last round did per iteration (over a window as
    long as that round): on a well-conditioned program, or at a tolerance where the gap waits
    for the dual point, FISTA is hard to beat, and the trial costs one round at most."""
    start_time = time.perf_counter()
    basis = smooth_basis(problem)
    point = init
    history: list[Checkpoint] = []
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None  # objective, Z, b
    lower = -math.inf
    n_iter = lbfgs_iter = 0
    entries, round_size, stalled, rival = 0, FISTA_ROUND, False, None

    def record(c: Checkpoint, first: int = 0, elapsed: float = 0.0) -> None:
        """A sub-run's checkpoint, counted from this solve's start and with the best bounds
        of the whole solve (each sub-run starts its own)."""
        top = min([c.objective] + [h.objective for h in history[-1:]] +
                  ([best[0]] if best else []))
        bound = max([c.lower_bound, lower] + [h.lower_bound for h in history[-1:]])
        history.append(replace(c, iteration=c.iteration + first, seconds=c.seconds + elapsed,
                               lower_bound=bound, gap=relative_gap(top, bound)))
        if callback is not None:
            callback(history[-1])

    while n_iter < max_iter and not stalled:
        if entries < 2 and rival is not None and rival[1] > 0 and \
                _rank_ratio(point[0] @ basis) >= ENTER_RATIO:
            entries += 1
            cert, Z, run_lower, done, ending = _lbfgs(
                problem, *point, basis, tol, max_iter - n_iter, check_every, start_time,
                n_iter, relative_gap(best[0], lower), rival, verbose, record)
            lbfgs_iter += done
            found = (cert.objective, Z, cert.intercept)
            if ending == "slower":
                entries = 2  # FISTA for the rest
            ending = "left" if ending == "stalled" else ending  # FISTA has its go
        else:
            budget = min(round_size, max_iter - n_iter)
            round_size *= 2
            elapsed, first = time.perf_counter() - start_time, n_iter
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # the whole run warns
                run = fista(problem, tol=tol, max_iter=budget, check_every=check_every,
                            init=point, verbose=verbose,
                            callback=lambda c: record(c, first, elapsed))
            done, ending, run_lower = run.n_iter, str(run.status), run.lower_bound
            found = (run.objective, run.dense, run.intercept)
            rival = (_rate(run.history[0].gap, run.gap, done), done)
        n_iter += done
        lower = max(lower, run_lower)
        if best is None or found[0] < best[0]:
            best = found
        point = best[1:]
        if relative_gap(best[0], lower) <= tol:
            break
        stalled = ending == "stalled" or done == 0
    gap = relative_gap(best[0], lower)
    status = Status.OPTIMAL if gap <= tol else Status.STALLED if stalled else Status.MAX_ITER
    warn_unconverged("FISTA/L-BFGS", status, n_iter, gap, tol, _PATIENCE, best[1].dtype)
    return Solution.of(problem, dense=best[1], intercept=best[2], objective=best[0],
                       lower_bound=lower, gap=gap, status=status,
                       method="lbfgs" if lbfgs_iter else "fista", n_iter=n_iter,
                       seconds=time.perf_counter() - start_time,
                       certificate=CertificateInfo("exact SVD"), history=tuple(history))
