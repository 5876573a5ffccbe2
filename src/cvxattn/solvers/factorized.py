"""Factorized (Burer–Monteiro) solving with a certificate, SPEC.md §4.

The variables are the network's heads: Z_g = Σ_r vec(W1_{g,r}) vec(W2_{g,r})ᵀ. The solver
minimizes the network's objective

    F(W1, W2, b) = (1/n) Σ_i ℓ(net_i(W1, W2) + b, y_i) + (β/2) (‖W1‖² + ‖W2‖²)

with full-batch L-BFGS (strong Wolfe line search; the passes over the data go in chunks of
samples, :mod:`.passes`). F has the convex optimum as its global minimum once every block has
enough heads, and F ≥ P(Z, b) always. Every ``check_every`` iterations (more when a
certificate would otherwise cost over a quarter of the L-BFGS passes: the interval grows with
the passes the last one took, up to 8 × ``check_every``):

1. certificate: refit the intercept b*, take λ_i = ∇ℓ(p_i + b*), estimate σ_g = ‖M_g‖_op of every
   gradient block M_g = (1/n) Σ_i A_{i,g}ᵀ λ_i by block Lanczos through the head's closed-form
   products (``Head.gradient_product``) or else probe heads (:class:`.krylov.KrylovNorm`,
   started from a random vector and the previous certificate's
   top Ritz vectors), and evaluate P(Z, b*) (nuclear norms from the heads, without
   forming Z) and the dual value D(θΛ) with θ = min(1, β / max_g σ_g). The relative bound of
   Sahiner et al. (2023, Thm 3.4), (max_g σ_g / β − 1)_+, is recorded too.
2. rank growth: in every block, a Ritz pair (u, v, θ) of M_g with θ > β gives the descent
   direction −u vᵀ (slope β − θ < 0 per unit of nuclear norm); the top ones that lie outside the
   present heads' span are added as new heads (−√t_i u, √t_i v), t_i ∝ θ_i − β, with one exact
   line search on the common scale; the heads of a block at most double per round.
3. pruning: heads are re-balanced (SVD of the small core of each block) and those whose
   singular value fell below ``prune_rtol`` · max are dropped.

The run stops when the gap, computed with spectral norms that hold with probability ≥ 1 − δ
(Kuczyński–Woźniakowski bound, :mod:`.krylov`), is ≤ ``tol``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..problem import Problem
from .certificate import dual_bound, relative_gap
from .krylov import KrylovNorm
from .passes import NetworkPasses
from .solution import (CertificateInfo, Checkpoint, Solution, Status, finish_in_float64,
                       no_progress, warn_unconverged)

__all__ = ["factorized"]

_ESTIMATE_STEPS = 30  # Lanczos steps at most for an intermediate (estimated) certificate
_ESTIMATE_RTOL = 1e-4  # ... stopped once no σ_g moves by more than this between steps
_PATIENCE = 5  # checks without progress before the run counts as stalled
_SETTLED = 0.1  # grow when a check interval gains less than this fraction of the gap
_NOVELTY = 0.1  # a Ritz pair this far outside the heads' span becomes a new head
_GROW_MIN = 4  # new heads per block and round at least (when that many pairs qualify)
_GROW_MAX = 64  # Ritz pairs kept per block for growth
_WARM = 4  # top Ritz vectors per block of a certificate that start the next one's Lanczos
_CHECK_SHARE = 0.25  # certificates may cost this fraction of the L-BFGS passes: ...
_INTERVAL_MAX = 8  # ... the interval between them grows to at most this many check_every


@dataclass
class _Check:
    """One certificate of the heads (W1, W2) with the intercept refitted."""

    objective: float  # P(Z, b*)
    estimate: float  # D(θΛ) with θ from the Lanczos estimates σ̂ (not a proven bound)
    lower_bound: float  # D(θΛ) with θ from σ̂/√(1 − ε): ≤ P* with probability ≥ 1 − δ
    intercept: torch.Tensor  # b*
    sigmas: torch.Tensor  # σ̂_g (G,)
    epsilon: float
    exact: bool  # the Krylov basis spanned the block: σ̂ exact, lower_bound deterministic
    steps: int
    outputs: torch.Tensor  # network outputs without intercept
    top: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # Ritz pairs u (G,p,k), v (G,q,k), θ

    @property
    def estimated_gap(self) -> float:
        return relative_gap(self.objective, self.estimate)


def _check(problem: Problem, passes: NetworkPasses, W1, W2, b, warm, seed: int, delta: float,
           strict_tol: float | None, max_steps: int) -> _Check:
    """Certificate at (W1, W2). Estimated only (``strict_tol=None``: Lanczos until the σ̂ settle),
    or extended until the gap with the probabilistic bound on the spectral norms is ≤
    ``strict_tol``, the basis spans the block, or ``max_steps``."""
    head, loss, beta = problem.head, problem.loss, problem.beta
    with torch.no_grad():
        raw = passes.outputs(W1, W2)
        b = loss.fit_intercept(raw, problem.y, b) if problem.fit_intercept else torch.zeros_like(b)
        nuclear = float(head.balance(W1, W2)[2].sum())
        objective = float(loss.value(raw + b, problem.y)) + beta * nuclear
        duals = loss.gradient(raw + b, problem.y)  # λ_i (n, c)
    krylov = KrylovNorm(lambda V: passes.forward(duals, V), lambda U: passes.backward(duals, U),
                        (head.n_blocks, *head.block_shape), dtype=raw.dtype, device=raw.device,
                        warm=warm, seed=seed)

    def dual_value(sigmas: torch.Tensor) -> float:
        return dual_bound(problem, duals, sigmas)[0]

    def proven() -> float:
        epsilon = krylov.epsilon(delta)
        return dual_value(krylov.values / math.sqrt(1.0 - epsilon)) if epsilon < 1 else -math.inf

    previous = None
    while not krylov.exact and krylov.steps < min(_ESTIMATE_STEPS, max_steps):
        sigmas = krylov.step()
        if previous is not None and bool(((sigmas - previous).abs()
                                          <= _ESTIMATE_RTOL * sigmas.max()).all()):
            break
        previous = sigmas.clone()
    lower = -math.inf
    if krylov.exact or strict_tol is not None:
        lower = proven()
        while (strict_tol is not None and relative_gap(objective, lower) > strict_tol
               and not krylov.exact and krylov.steps < max_steps):
            for _ in range(10):
                krylov.step()
            lower = proven()
    return _Check(objective, dual_value(krylov.values), lower, b, krylov.values,
                  krylov.epsilon(delta), krylov.exact, krylov.steps, raw,
                  krylov.vectors(_GROW_MAX))


def _grow(problem: Problem, passes: NetworkPasses, W1, W2, check: _Check):
    """New heads from the Ritz pairs (u_i, v_i, θ_i) of every block with θ_i > β whose
    direction lies outside the present heads' span: heads (−√(t w_i) u_i, √(t w_i) v_i) with
    w_i ∝ θ_i − β and one exact line search on the common scale t (the slope at t = 0 is
    Σ w_i (β − θ_i) < 0). At most as many new heads per block as it has (at least
    ``_GROW_MIN``), so the heads at most double per round. Returns the new (W1, W2) or None."""
    head, loss, beta = problem.head, problem.loss, problem.beta
    u, v, values = check.top  # (G, p, k), (G, q, k), (G, k)
    excess = (values - beta).clamp_min(0)  # (G, k)
    if W1.shape[1]:
        # a violation inside the span of the present heads is L-BFGS's to fix, not a new head
        novel = _novelty(head.vec_w1(W1), u).maximum(_novelty(head.vec_w2(W2), v)) > _NOVELTY
        excess = excess * novel
    k = min(values.shape[1], max(_GROW_MIN, W1.shape[1]))
    excess = excess[:, :k]
    if not bool((excess > 0).any()):
        return None
    root = (excess / excess.max()).sqrt()  # √w (G, k)
    new1 = head.unvec_w1(-(u[:, :, :k] * root[:, None, :]).transpose(1, 2))  # (G, k, *w1)
    new2 = head.unvec_w2((v[:, :, :k] * root[:, None, :]).transpose(1, 2))  # (G, k, *w2)
    with torch.no_grad():
        delta = passes.outputs(new1, new2)  # outputs of the new heads at t = 1
        base = check.outputs + check.intercept
    total = float(root.pow(2).sum())

    def slope(t: float) -> float:  # φ'(t) for φ(t) = f(p + tΔ) + β t Σ w
        tt = torch.tensor(t, dtype=base.dtype, device=base.device, requires_grad=True)
        with torch.enable_grad():
            value = loss.value(base + tt * delta, problem.y)
            return float(torch.autograd.grad(value, tt)[0]) + beta * total

    if slope(0.0) >= 0:
        return None
    low, high = 0.0, 1.0
    while slope(high) < 0 and high < 1e12:
        low, high = high, 2.0 * high
    for _ in range(60):  # bisection on the monotone slope of the convex φ
        mid = 0.5 * (low + high)
        low, high = (mid, high) if slope(mid) < 0 else (low, mid)
    t = math.sqrt(0.5 * (low + high))
    return torch.cat([W1, t * new1], 1), torch.cat([W2, t * new2], 1)


def _novelty(heads: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """‖(I − P) x_{g,i}‖ for unit columns x (G, p, k), P the projector on the span of the heads
    (G, r, p); shape (G, k)."""
    Q, _ = torch.linalg.qr(heads.transpose(1, 2))  # (G, p, r)
    return (x - Q @ (Q.transpose(1, 2) @ x)).norm(dim=1)


def _lbfgs(params, history_size: int, max_iter: int) -> torch.optim.LBFGS:
    return torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=history_size,
                             line_search_fn="strong_wolfe", tolerance_grad=0.0,
                             tolerance_change=0.0)


def factorized(problem: Problem, tol: float = 1e-6, max_iter: int = 5000,
               init: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
               check_every: int = 20, history_size: int = 20, chunk_size: int | None = None,
               cache: bool = True, delta: float = 1e-3, prune_rtol: float = 1e-8, seed: int = 0,
               krylov_steps: int = 2000, verbose: bool = False, callback=None) -> Solution:
    """Solve ``problem`` over the network's heads until the certified relative gap is ≤ ``tol``.

    ``init``: heads and intercept (W1 (G, r, *w1_shape), W2 (G, r, *w2_shape), b (c,)) to start
    from (default: no heads; the first check grows them from the gradient at Z = 0).
    ``max_iter`` counts L-BFGS iterations. ``delta``: failure probability of the final
    certificate's spectral norms. ``seed`` fixes the random Lanczos starts: the same seed gives
    the same result. ``chunk_size``/``cache``: samples per network pass and whether their
    lifted data is kept (:func:`.memory.plan` picks them); ``krylov_steps`` caps the Lanczos
    steps (and the basis stored) of a certificate. ``callback``: called with every checkpoint
    as it is recorded.
    """
    start_time = time.perf_counter()
    head, beta = problem.head, problem.beta
    G = head.n_blocks
    like = problem.X
    if init is None:
        W1 = like.new_zeros((G, 0, *head.w1_shape))
        W2 = like.new_zeros((G, 0, *head.w2_shape))
        b = like.new_zeros(problem.c)
    else:
        W1, W2, b = (t.detach().to(like).clone() for t in init)
    passes = NetworkPasses(problem, chunk_size, cache)
    counted = 0  # passes of the float32 passes object, once the float64 one takes over

    history: list[Checkpoint] = []
    best: _Check | None = None
    best_heads = (W1, W2)
    lower = -math.inf
    certified_by: _Check | None = None  # the check that gave the best lower bound
    since = 0  # history index where the present precision started
    n_iter, n_checks, strict_checks = 0, 0, 0
    warm = None
    status = Status.MAX_ITER
    optimizer = None
    precision = None  # how the arithmetic changed, once the float64 finish has started
    interval = check_every  # L-BFGS iterations until the next certificate
    per_iter = None  # passes per L-BFGS iteration in the last interval
    while True:
        check_start = passes.count
        check = _check(problem, passes, W1, W2, b, warm, seed + n_checks, delta, None,
                       krylov_steps)
        n_checks += 1
        if check.estimated_gap <= tol and not check.exact:
            # looks optimal: certify with the probabilistic bound on the spectral norms
            check = _check(problem, passes, W1, W2, b, warm, seed + n_checks, delta, tol,
                           krylov_steps)
            n_checks += 1
            strict_checks += 1
        # the next Lanczos run starts from these top vectors (on the side it works on)
        warm = check.top[1 if head.block_shape[1] <= head.block_shape[0] else 0][:, :, :_WARM]
        if per_iter:  # space the certificates so that they cost ≤ _CHECK_SHARE of the passes
            wanted = math.ceil((passes.count - check_start) / (_CHECK_SHARE * per_iter))
            interval = min(max(wanted, check_every), _INTERVAL_MAX * check_every)
        if best is None or check.objective < best.objective:
            best, best_heads = check, (W1, W2)
        if check.lower_bound > lower:
            lower, certified_by = check.lower_bound, check
        gap = relative_gap(best.objective, lower)
        history.append(Checkpoint(n_iter, time.perf_counter() - start_time, check.objective,
                                  lower, gap, check.estimated_gap))
        if callback is not None:
            callback(history[-1])
        if verbose:
            ratio = float(check.sigmas.max()) / beta
            print(f"  factorized {n_iter:6d}  heads={W1.shape[1]:3d}  P={check.objective:.10e}"
                  f"  gap={gap:.2e} (estimated {check.estimated_gap:.2e})  max σ/β={ratio:.6f}"
                  f"  lanczos={check.steps}")
        status = (Status.OPTIMAL if gap <= tol else Status.MAX_ITER if n_iter >= max_iter
                  else Status.STALLED if no_progress(history[since:],
                                                      torch.finfo(passes.dtype).eps, _PATIENCE)
                  else None)
        if status is not None and finish_in_float64(passes.dtype, status, tol, n_iter,
                                                    max_iter):
            # float32 stalled above tol, or claims a gap it cannot prove: go on in float64
            # from its best heads, chunk by chunk (the tokens stay float32; their lifted data
            # is recomputed in each pass), certified afresh
            counted += passes.count
            passes = NetworkPasses(problem, chunk_size, cache=False, dtype=torch.float64)
            W1, W2 = (w.double() for w in best_heads)
            b = best.intercept.double()
            since, optimizer = len(history), None
            best, lower, certified_by = None, -math.inf, None
            precision = (f"float32 until iteration {n_iter} ({status} at gap {gap:.1e} in "
                         "float32), then float64")
            continue
        if status is not None:
            break
        # grow only once L-BFGS has (nearly) converged at the present heads: the last interval
        # gained less than a tenth of the estimated gap (growing earlier resets its memory)
        settled = (len(history) < 2 or history[-2].objective - check.objective
                   <= _SETTLED * (check.objective - check.estimate))
        grown = _grow(problem, passes, W1, W2, check) if settled else None
        if grown is not None or optimizer is None:
            if grown is not None:
                W1, W2, _ = head.balance(*grown, rtol=prune_rtol)
            b = check.intercept
            params = [W1.contiguous().clone().requires_grad_(True),
                      W2.contiguous().clone().requires_grad_(True),
                      b.clone().requires_grad_(problem.fit_intercept)]
            optimizer = _lbfgs(params, history_size, check_every)
        group = optimizer.param_groups[0]
        group["max_iter"] = min(interval, max_iter - n_iter)
        group["max_eval"] = group["max_iter"] * 5 // 4  # (torch's default, at the new length)

        def closure():
            value, g1, g2, gb = passes.loss_and_gradient(*params)
            value = value + 0.5 * beta * (params[0].detach().pow(2).sum()
                                          + params[1].detach().pow(2).sum())
            params[0].grad = g1 + beta * params[0].detach()
            params[1].grad = g2 + beta * params[1].detach()
            params[2].grad = gb
            return value

        before = optimizer.state[optimizer._params[0]].get("n_iter", 0)
        before_passes = passes.count
        optimizer.step(closure)
        done = max(1, optimizer.state[optimizer._params[0]].get("n_iter", 0) - before)
        n_iter += done
        per_iter = (passes.count - before_passes) / done
        W1, W2, b = (p.detach().clone() for p in params)

    # the returned heads: balanced, pruned, with the certificate's intercept
    W1, W2, _ = head.balance(*best_heads, rtol=prune_rtol)
    warn_unconverged("factorized solver (L-BFGS)", status, n_iter, gap, tol, _PATIENCE,
                     passes.dtype)
    if certified_by is None:
        how = CertificateInfo("none", exact=False, precision=precision)
    else:
        how = CertificateInfo("block Lanczos via " + ("closed-form gradient products"
                                                       if passes.closed_form else "probe heads"),
                              exact=certified_by.exact, precision=precision,
                              steps=certified_by.steps,
                              epsilon=None if certified_by.exact else certified_by.epsilon,
                              probability=None if certified_by.exact
                              else 1 - delta * strict_checks,
                              checks=None if certified_by.exact else strict_checks)
    return Solution.of(problem, intercept=best.intercept, objective=best.objective,
                       lower_bound=lower, gap=relative_gap(best.objective, lower),
                       status=status, method="factorized", n_iter=n_iter,
                       seconds=time.perf_counter() - start_time, certificate=how,
                       history=tuple(history), heads=(W1, W2),
                       n_passes=counted + passes.count)
