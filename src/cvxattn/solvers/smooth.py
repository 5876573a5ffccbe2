"""FISTA, and a second-order method where the block nuclear norm is smooth
(``method="hybrid"``).

‖Z_g‖_* = Σ_k σ_k(Z_g) is differentiable wherever Z_g has full rank min(p, q), with gradient
U_g V_gᵀ (its thin SVD) and a Hessian in closed form. So near an optimum whose blocks all have
full rank — the small-β end of a regularization path, where FISTA needs tens of thousands of
iterations on an ill-conditioned loss, and where a certificate needs the point close in
distance, not only in objective — the program is a smooth one, and a second-order method
converges in a few steps. Away from it (a rank-deficient optimum, a zero start) proximal steps
are what works. This solver alternates:

1. FISTA (``cvxattn.solvers.fista``), one run, asked at every check whether to stop;
2. it stops once every block has full rank (σ_min ≥ ``ENTER_RATIO`` · σ_max), for L-BFGS
   after ``FISTA_ROUND`` iterations at least, and then:
   - **Newton's method** when the pooled outputs are an explicit design times the blocks
     (``Head.pooled_design``) and the system has at most ``NEWTON_SIZE`` unknowns: the loss's
     Hessian assembled from the design, the nuclear norm's in closed form, a Cholesky solve, a
     backtracking line search that keeps every block of full rank; or else
   - **L-BFGS** with a strong-Wolfe line search (``torch.optim.LBFGS``), kept only while it
     closes the gap per evaluation at least as fast as the FISTA run before it did per
     iteration.

   Either hands back to FISTA when a block nears rank deficiency (the smallest singular value
   of any block below ``LEAVE_RATIO`` times the largest of all) or the bounds stop moving;
   Newton also when its gap does not halve within ``_NEWTON_WINDOW`` steps.

Cross-entropy is invariant to adding one vector to every class's logits, and every head except
the block FNO with B > 1 groups adds a block's columns class by class (the class is the inner
axis of the columns, ``Head.class_columns``). Then P(Z Π) ≤ P(Z) for the projection Π = I ⊗ (I −
11ᵀ/c), so the optimum has Z_g(I ⊗ 1) = 0 and rank ≤ min(p, q − q/c): never "full rank" in the
plain sense. The second-order phases therefore work on M_g = Z_g B, Z_g = M_g Bᵀ, with B (q, k)
an orthonormal basis of that subspace, and ‖Z_g‖_* = ‖M_g‖_*.

Like FISTA every phase runs in centered coordinates (``Problem.centered``), and every lower
bound is the exact certificate of SPEC.md §4 (``certify``): the method changes how the point is
found, never how it is proven.
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

__all__ = ["hybrid", "smooth_basis"]

FISTA_ROUND = 100  # FISTA iterations before L-BFGS may take over (its rate to race against)
ENTER_RATIO = 1e-2  # smallest σ of any block / largest of all, above which Newton or L-BFGS
#                     takes over (_rank_ratio)
LEAVE_RATIO = 1e-4  # ... and below which it hands back to FISTA
_MEMORY = 10  # L-BFGS history
_PATIENCE = 5  # checks without progress before L-BFGS hands back
NEWTON_SIZE = 2000  # most unknowns of a Newton system formed explicitly (a 32 MiB matrix)
_NEWTON_WINDOW = 5  # Newton steps within which the gap must at least halve


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
    """The smallest singular value of any block over the largest of all blocks (0 for a zero
    solution): a block that shrinks towards zero leaves the smooth region as surely as one
    that loses a direction."""
    sigma = torch.linalg.svdvals(M)  # (G, k)
    top = float(sigma.max())
    return float(sigma.min()) / top if top > 0.0 else 0.0


class _Checks:
    """The exact certificate after each step of a second-order phase: the best point and the
    best lower bound so far, each check recorded (``callback``) and printed (``verbose``)."""

    def __init__(self, problem: Problem, name: str, first_iter: int, start_time: float,
                 verbose: bool, callback):
        self.problem, self.name, self.first_iter = problem, name, first_iter
        self.start_time, self.verbose, self.callback = start_time, verbose, callback
        self.history: list[Checkpoint] = []
        self.best = self.best_Z = None
        self.lower = -math.inf
        self.extrapolation = DualExtrapolation()

    def __call__(self, blocks: torch.Tensor, bias: torch.Tensor, n_iter: int) -> float:
        """Certify blocks Z and the centered intercept b'; return the relative gap."""
        problem = self.problem
        with torch.no_grad():
            outputs = problem.outputs(blocks)
            cert = certify(problem, blocks, bias - problem.output_mean(outputs), outputs)
        if self.best is None or cert.objective < self.best.objective:
            self.best, self.best_Z = cert, blocks
        self.lower = max(self.lower, cert.lower_bound,
                         self.extrapolation.lower_bound(problem, cert))
        gap = relative_gap(self.best.objective, self.lower)
        self.history.append(Checkpoint(self.first_iter + n_iter,
                                       time.perf_counter() - self.start_time,
                                       cert.objective, self.lower, gap))
        self.callback(self.history[-1])
        if self.verbose:
            print(f"  {self.name:6s} {self.first_iter + n_iter:6d}  P={cert.objective:.10e}  "
                  f"D={self.lower:.10e}  gap={gap:.2e}")
        return gap

    def stalled(self) -> bool:
        return no_progress(self.history, torch.finfo(self.best_Z.dtype).eps, _PATIENCE)


def _lbfgs(problem: Problem, Z: torch.Tensor, b: torch.Tensor, basis: torch.Tensor,
           tol: float, max_iter: int, check_every: int, start_time: float, first_iter: int,
           entry_gap: float, rival: tuple[float, int], verbose: bool, callback):
    """L-BFGS on (M, b') from blocks Z and a true intercept b, at gap ``entry_gap``. After a
    trial as long as the FISTA run before it, it hands back ("slower") when it has closed the
    gap by less, −Δ log(gap) per evaluation of the loss and gradient, than FISTA did per
    iteration (``rival``: that rate and that run's length). ``callback`` records every
    checkpoint.
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
            # the outputs first only where the adjoint then needs no forward pass of its own
            outputs = (problem.outputs(blocks) if problem.head.has_adjoint(problem.data,
                                                                             problem.pooled)
                       else None)
        value, gZ, gb = problem.loss_and_gradient(blocks, bias, outputs, centered=True)
        with torch.no_grad():
            U, S, Vh = torch.linalg.svd(M, full_matrices=False)
            M.grad = gZ @ basis + beta * (U @ Vh)
            bias.grad = gb.clone()
            return value + beta * S.sum()

    checks = _Checks(problem, "lbfgs", first_iter, start_time, verbose, callback)
    history = checks.history
    evaluations: list[int] = []  # loss-and-gradient evaluations at each check
    n_iter, ending = 0, "max_iter"
    while n_iter < max_iter:
        optimizer.param_groups[0]["max_iter"] = min(check_every, max_iter - n_iter)
        before = optimizer.state[optimizer._params[0]].get("n_iter", 0)
        optimizer.step(closure)
        done = optimizer.state[optimizer._params[0]]["n_iter"] - before
        n_iter += done
        gap = checks(M.detach() @ basis.T, bias.detach(), n_iter)
        if gap <= tol:
            ending = "optimal"
            break
        if done == 0 or _rank_ratio(M.detach()) < LEAVE_RATIO:
            ending = "left"  # the line search found no step, or a block nears rank deficiency
            break
        if checks.stalled():
            ending = "stalled"
            break
        # its rate over the last window as long as FISTA's run (from the entry at first)
        evaluations.append(optimizer.state[optimizer._params[0]]["func_evals"])
        if n_iter >= rival[1]:
            window = [k for k in range(len(history))
                      if history[-1].iteration - history[k].iteration >= rival[1]]
            then, used = ((history[window[-1]].gap, evaluations[-1] - evaluations[window[-1]])
                          if window else (entry_gap, evaluations[-1]))
            if _rate(then, gap, used) < rival[0]:
                ending = "slower"
                break
    return checks.best, checks.best_Z, checks.lower, n_iter, ending


def _rate(before: float, after: float, steps: int) -> float:
    """−Δ log(gap) per step."""
    if steps <= 0 or before <= 0 or not math.isfinite(before):
        return 0.0
    return (math.log(before) - math.log(max(after, 1e-300))) / steps


def _nuclear_hessian(M: torch.Tensor) -> torch.Tensor:
    """∇²‖M‖_* (p·k, p·k) at a full-rank block M (p, k), row-major vec. With M = U S Vᵀ (thin)
    and p ≥ k, the derivative of ∇‖M‖_* = U Vᵀ along E is
    U [(A − Aᵀ) ∘ F] Vᵀ + (I − U Uᵀ) E V S⁻¹ Vᵀ,  A = Uᵀ E V,  F_ij = 1/(σ_i + σ_j);
    for p < k the same on Mᵀ."""
    p, k = M.shape
    if p < k:
        H = _nuclear_hessian(M.T)  # indices (j, i) of Mᵀ; permute back to (i, j) of M
        order = torch.arange(p * k, device=M.device).reshape(k, p).T.reshape(-1)
        return H[order][:, order]
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)  # U (p, k), S (k,), Vh (k, k)
    V = Vh.T
    E = torch.eye(p * k, dtype=M.dtype, device=M.device).reshape(p * k, p, k)  # every basis E
    A = U.T @ E @ V  # (pk, k, k)
    F = 1.0 / (S[:, None] + S[None, :])
    inner = U @ (((A - A.transpose(1, 2)) * F) @ Vh)
    outer = (E - U @ (U.T @ E)) @ (V / S) @ Vh
    return (inner + outer).reshape(p * k, p * k).T  # column e = H e; H is symmetric


def _newton_system(problem: Problem, design: torch.Tensor, blocks: torch.Tensor,
                   bias: torch.Tensor, basis: torch.Tensor):
    """Value, gradient and Hessian of F in the coordinates (M, β_b) with Z_g = M_g Bᵀ and the
    centered intercept b' = B_c β_b, from the pooled design Φ (n, D): outputs Φ̃ W + b' with
    W = Z.reshape(D, c) and Φ̃ = Φ centered. Every row of W (and b') lives in the span of the
    same B_c (c, k) — B is block-diagonal in B_c — so with the loss's Hessian
    diag(w_i) − u_i u_iᵀ and the augmented design a_i = (φ̃_i, 1):
        H = Σ_c (Σ_i w_ic a_i a_iᵀ) ⊗ B_c[c]ᵀB_c[c] − Σ_i (a_i ⊗ B_cᵀu_i)(a_i ⊗ B_cᵀu_i)ᵀ, / n,
    plus β times the nuclear norm's Hessian of every block M_g."""
    n, D = design.shape
    c = problem.c
    G, p, q = blocks.shape
    k = basis.shape[1] * c // q  # per class group: c − 1, or c
    Bc = basis[:c, :k]
    centered = design - design.mean(0)
    outputs = centered @ blocks.reshape(D, c) + bias
    value = problem.loss.value(outputs, problem.y)
    weights = problem.loss.gradient(outputs, problem.y) / n  # (n, c)
    augmented = torch.cat([centered, centered.new_ones(n, 1)], dim=1)  # (n, D + 1)
    g = ((augmented.T @ weights) @ Bc).reshape(-1)  # ((D + 1)·k,)
    w, u = problem.loss.hessian_parts(outputs)
    per_class = torch.einsum("ni,na,nj->aij", augmented, w / n, augmented)  # (c, D+1, D+1)
    H = torch.einsum("aij,ak,al->ikjl", per_class, Bc, Bc).reshape((D + 1) * k, (D + 1) * k)
    if u is not None:
        Q = (augmented[:, :, None] * (u @ Bc)[:, None, :]).reshape(n, (D + 1) * k)
        H -= Q.T @ Q / n
    M = blocks @ basis  # (G, p, k·q/c)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    value = value + problem.beta * S.sum()
    size = M.numel()
    g[:size] += problem.beta * (U @ Vh).reshape(-1)
    block = size // G
    for gi in range(G):
        rows = slice(gi * block, (gi + 1) * block)
        H[rows, rows] += problem.beta * _nuclear_hessian(M[gi])
    return float(value), g, H, Bc


def _newton(problem: Problem, Z: torch.Tensor, b: torch.Tensor, basis: torch.Tensor,
            tol: float, max_iter: int, check_every: int, start_time: float, first_iter: int,
            entry_gap: float, rival, verbose: bool, callback):
    """Newton's method on (M, b') where the pooled design is explicit and the system small
    (``NEWTON_SIZE``): the Hessian of the loss and of the nuclear norm formed and solved by
    Cholesky, a backtracking line search that keeps every block of full rank, the exact
    certificate after every step. Same contract as :func:`_lbfgs`."""
    design = problem.head.pooled_design(problem.data)
    G, p, q = Z.shape
    k = basis.shape[1]
    shift = problem.output_mean(problem.outputs(Z))
    blocks, bias = Z.clone(), b + shift  # centered coordinates
    checks = _Checks(problem, "newton", first_iter, start_time, verbose, callback)
    eps = torch.finfo(Z.dtype).eps
    n_iter, ending = 0, "max_iter"
    while n_iter < max_iter:
        value, g, H, Bc = _newton_system(problem, design, blocks, bias, basis)
        problem.passes += 1  # the system reads the design once (its Gram costs D× a pass)
        ridge = 1e-12 * float(H.diagonal().abs().max())
        while True:
            L, info = torch.linalg.cholesky_ex(
                H + ridge * torch.eye(len(H), dtype=H.dtype, device=H.device))
            if int(info) == 0:
                break
            ridge = max(10 * ridge, 1e-300)
        step = -torch.cholesky_solve(g[:, None], L)[:, 0]
        slope = float(g @ step)  # < 0
        t, moved = 1.0, False
        for _ in range(40):  # backtracking: decrease (or a step below rounding), full rank
            dM = (t * step[:G * p * k]).reshape(G, p, k)
            trial_blocks = blocks + dM @ basis.T
            trial_bias = bias + Bc @ (t * step[G * p * k:])
            if _rank_ratio(trial_blocks @ basis) >= LEAVE_RATIO:
                outputs = problem.outputs(trial_blocks)
                trial = float(problem.loss_of_outputs(problem.centered(outputs), trial_bias)
                              + problem.beta * problem.regularizer.value(trial_blocks))
                if trial <= value + 1e-4 * t * slope or -t * slope <= 10 * eps * abs(value):
                    blocks, bias, moved = trial_blocks, trial_bias, True
                    break
            t *= 0.5
        n_iter += 1
        if checks(blocks, bias, n_iter) <= tol:
            ending = "optimal"
            break
        if not moved:
            ending = "left"  # no step keeps the blocks of full rank and lowers F
            break
        gaps = [h.gap for h in checks.history]
        if len(gaps) > _NEWTON_WINDOW and gaps[-1] > 0.5 * gaps[-1 - _NEWTON_WINDOW]:
            ending = "left"  # not converging like Newton: the optimum is not where it is smooth
            break
        if checks.stalled():
            ending = "stalled"
            break
    return checks.best, checks.best_Z, checks.lower, n_iter, ending


def _newton_applies(problem: Problem, basis: torch.Tensor) -> bool:
    """Whether the Newton system can be formed: pooled outputs through an explicit design and
    at most ``NEWTON_SIZE`` unknowns."""
    if not problem.pooled or problem.head.pooled_design(problem.data) is None:
        return False
    G, p, _ = (problem.head.n_blocks, *problem.head.block_shape)
    return G * p * basis.shape[1] + problem.c <= NEWTON_SIZE


def hybrid(problem: Problem, tol: float = 1e-6, max_iter: int = 5000, check_every: int = 10,
           init: tuple[torch.Tensor, torch.Tensor] | None = None, verbose: bool = False,
           callback=None) -> Solution:
    """Solve ``problem`` to a relative gap ≤ ``tol`` by FISTA and, where every block has full
    rank, Newton's method or L-BFGS (see the module's docstring). ``max_iter`` counts the
    iterations of all (a Newton step is one). ``Solution.method`` is ``"newton"`` or
    ``"lbfgs"`` when that phase ran, else ``"fista"``.

    FISTA runs until the blocks have full rank (the rank tested at every check); Newton may
    start at once from a full-rank ``init``. The second-order phase is entered at most
    twice. L-BFGS keeps going only while it closes the gap at least as fast per evaluation as
    the FISTA run before it did per iteration (over a window as long as that run): on a
    well-conditioned program, or at a tolerance where the gap waits for the dual point, FISTA
    is hard to beat, and the trial costs as many iterations as that run at most."""
    start_time, start_passes = time.perf_counter(), problem.passes
    basis = smooth_basis(problem)
    newton = _newton_applies(problem, basis)
    point = init
    history: list[Checkpoint] = []
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None  # objective, Z, b
    lower = -math.inf
    n_iter = second_order_iter = 0
    entries, stalled, rival = 0, False, None

    def record(c: Checkpoint, first: int = 0, elapsed: float = 0.0) -> None:
        """A sub-run's checkpoint, counted from this solve's start and with the best bounds
        of the whole solve (each sub-run starts its own)."""
        top = min([c.objective] + [h.objective for h in history])  # the best P so far
        bound = max([c.lower_bound, lower] + [h.lower_bound for h in history[-1:]])
        history.append(replace(c, iteration=c.iteration + first, seconds=c.seconds + elapsed,
                               lower_bound=bound, gap=relative_gap(top, bound)))
        if callback is not None:
            callback(history[-1])

    def full_rank(Z: torch.Tensor) -> bool:
        return _rank_ratio(Z @ basis) >= ENTER_RATIO

    def interrupt(iteration: int, Z: torch.Tensor) -> bool:
        # Newton at once; L-BFGS after a round of FISTA to race against
        return entries < 2 and (newton or iteration >= FISTA_ROUND) and full_rank(Z)

    while n_iter < max_iter and not stalled:
        if entries < 2 and point is not None and (newton or rival and rival[1] > 0) and \
                full_rank(point[0]):
            entries += 1
            smooth = _newton if newton else _lbfgs
            cert, Z, run_lower, done, ending = smooth(
                problem, *point, basis, tol, max_iter - n_iter, check_every, start_time,
                n_iter, relative_gap(best[0], lower) if best else math.inf, rival, verbose,
                record)
            second_order_iter += done
            found = (cert.objective, Z, cert.intercept)
            if ending == "slower":
                entries = 2  # FISTA for the rest
            ending = "left" if ending == "stalled" else ending  # FISTA has its go
        else:
            elapsed, first = time.perf_counter() - start_time, n_iter
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # the whole run warns
                run = fista(problem, tol=tol, max_iter=max_iter - n_iter,
                            check_every=check_every, init=point, verbose=verbose,
                            callback=lambda c: record(c, first, elapsed), interrupt=interrupt)
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
    warn_unconverged("FISTA/Newton" if newton else "FISTA/L-BFGS", status, n_iter, gap, tol,
                     _PATIENCE, best[1].dtype)
    return Solution.of(problem, dense=best[1], intercept=best[2], objective=best[0],
                       lower_bound=lower, gap=gap, status=status,
                       method=(("newton" if newton else "lbfgs") if second_order_iter
                               else "fista"), n_iter=n_iter,
                       seconds=time.perf_counter() - start_time,
                       certificate=CertificateInfo("exact SVD"), history=tuple(history),
                       n_passes=problem.passes - start_passes)
