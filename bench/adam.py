"""Suite ``adamw``: cvxattn against Adam from random initialization on the same objective.

Data: real tokens (scikit-learn's digits as 16 tokens of 4 features by default, or a cached
token set with ``--features DIR``), the training split. For each program:

1. P*: cvxattn's objective solved to a certified relative gap ``--ref-tol`` (1e-6): the
   reference optimum (the lower of this and step 2's objective).
2. cvxattn's time: the wall time of ``solve(problem, method=--method, tol=--tol)`` from scratch
   (default tol 1e-3, certified).
3. Adam: the program's own network (``problem.head.network``) with r heads per block, r the
   largest block rank of the solutions of steps 1–2, from a random N(0, ``--init-scale``²)
   initialization, trained by ``torch.optim.Adam`` on mini-batches (``--batch-size``) of exactly
   the same function: mean cross-entropy + β · weight_decay (½ Σ ‖W1‖² + ‖W2‖², SPEC.md §1;
   its minimum equals P*). One run per learning rate of ``--lrs``, each until it reaches
   P*·(1 + ``--tol``) or its training wall clock reaches the cap (``--cap`` seconds; default
   ``--cap-factor`` = 10 × cvxattn's time); a rate tried after one that reached the target stops
   once it can no longer be first (but never before cvxattn's time). The full-batch objective
   is evaluated after every epoch (and when a run stops) with the clock paused.

Reported: Adam's time to reach P*·(1 + tol) with the best learning rate (the earliest to reach;
if none does, "not reached"), and Adam's relative gap (P_adam − P*)/P* after the same wall time
as cvxattn (the best full-batch objective evaluated by then, best learning rate at that time).
Ratio: time(Adam)/time(cvxattn) (target ≥ 10×); when Adam does not reach the target, the ratio
is at least cap/time(cvxattn), printed as "> …" and flagged in the JSON.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from .common import (Column, bfno_groups, check_positive, fill_defaults, make_head,
                     parse_programs, print_table, real_tokens)

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def add_arguments(parser) -> None:
    parser.add_argument("--heads", nargs="+", metavar="PROGRAM",
                        help="programs (default: all ten; mlp-linear and attention-gated with "
                             "--quick)")
    parser.add_argument("--features", metavar="DIR", help="a cached token set "
                        "(cvxattn.features) instead of the digits")
    parser.add_argument("--n-train", type=int, help="stratified subset of the training split "
                        "(default: all of it; 200 with --quick)")
    parser.add_argument("--beta", type=float, default=1e-3, help="β (default 1e-3)")
    parser.add_argument("--gates", type=int, help="gates m of gated heads (default: 100 for "
                        "the MLP, 5 else; 2 with --quick)")
    parser.add_argument("--groups", type=int, help="B-FNO groups (default: 5, or the largest "
                        "that divides d and c)")
    parser.add_argument("--method", default="auto", choices=["auto", "fista", "hybrid", "factorized"])
    parser.add_argument("--tol", type=float, default=1e-3, help="cvxattn's certified gap, and "
                        "Adam's target relative to P* (1e-3)")
    parser.add_argument("--ref-tol", type=float, default=1e-6, help="gap of the P* solve")
    parser.add_argument("--max-iter", type=int, default=20_000, help="cvxattn iteration limit")
    parser.add_argument("--lrs", type=float, nargs="+", help="learning rates (1e-3 3e-3 1e-2 "
                        "3e-2; 1e-2 3e-2 with --quick)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--init-scale", type=float, default=0.1,
                        help="standard deviation of Adam's random initial heads")
    parser.add_argument("--cap", type=float, help="Adam's wall-clock cap per learning rate, "
                        "seconds (default: --cap-factor × cvxattn's time)")
    parser.add_argument("--cap-factor", type=float, help="default cap as a multiple of "
                        "cvxattn's time (10; 2 with --quick)")
    parser.add_argument("--dtype", default="float64", choices=list(DTYPES),
                        help="both cvxattn and Adam compute in this dtype")


def resolve(args) -> None:
    fill_defaults(args, heads=(["mlp-linear", "attention-gated"], None), n_train=(200, None),
                  gates=(2, None), lrs=([1e-2, 3e-2], [1e-3, 3e-3, 1e-2, 3e-2]),
                  cap_factor=(2.0, 10.0))
    parse_programs(args.heads)  # ValueError naming --heads
    check_positive(args, "beta", "tol", "ref_tol", "init_scale", "cap_factor", "batch_size",
                   "lrs", "max_iter")
    for name in ("cap", "n_train", "gates", "groups"):
        if getattr(args, name) is not None:
            check_positive(args, name)


def _solve(problem, method, tol, max_iter, seed):
    import cvxattn as ca

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ca.ConvergenceWarning)  # the status says it
        start = time.perf_counter()
        solution = ca.solve(problem, method=method, tol=tol, max_iter=max_iter, seed=seed)
    return solution, time.perf_counter() - start


def train_adam(problem, heads_per_block: int, lr: float, batch_size: int, cap: float,
               target: float, init_scale: float, seed: int) -> dict:
    """Adam on mean cross-entropy + β·weight_decay of the head's network, from a seeded random
    start, until the full-batch objective is ≤ ``target`` or ``cap`` seconds of training.

    Returns the curve [[training seconds, full-batch objective], …] (evaluated after every epoch,
    clock paused), the first time the target was reached (None if not), epochs and steps."""
    X, y, beta = problem.X, problem.y, problem.beta  # (n, s, d), (n,)
    net = problem.head.network(heads_per_block, fit_intercept=problem.fit_intercept, seed=seed,
                               scale=init_scale).to(X.dtype)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    cross_entropy = torch.nn.functional.cross_entropy

    def objective() -> float:
        with torch.no_grad():
            return float(cross_entropy(net(X), y) + beta * net.weight_decay())

    curve, clock, epochs, steps, reach = [[0.0, objective()]], 0.0, 0, 0, None
    while clock < cap and reach is None:
        start = time.perf_counter()
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            optimizer.zero_grad()
            loss = cross_entropy(net(X[batch]), y[batch]) + beta * net.weight_decay()
            loss.backward()
            optimizer.step()
            steps += 1
            if clock + time.perf_counter() - start >= cap:
                break
        clock += time.perf_counter() - start
        epochs += 1
        value = objective()
        curve.append([clock, value])
        if not math.isfinite(value):
            break
        if value <= target:
            reach = clock
    return {"lr": lr, "reach_seconds": reach, "epochs": epochs, "steps": steps,
            "final_objective": curve[-1][1], "curve": curve}


def best_before(curve: list, seconds: float) -> float:
    """The lowest finite objective of ``curve`` evaluated at or before ``seconds`` of training
    (inf if none: a diverged run)."""
    return min((v for t, v in curve if t <= seconds and math.isfinite(v)), default=math.inf)


def run_program(args, data, head_name: str, activation: str) -> dict:
    import cvxattn as ca

    d, c = data.X_train.shape[2], int(data.y_train.max()) + 1
    groups = args.groups or bfno_groups(d, c)
    head = make_head(head_name, activation, data.grid, args.gates, groups, args.seed)
    problem = ca.Problem(head, data.X_train, data.y_train, beta=args.beta,
                         dtype=DTYPES[args.dtype])
    reference, ref_seconds = _solve(problem, "auto", args.ref_tol, args.max_iter, args.seed)
    solution, seconds = _solve(problem, args.method, args.tol, args.max_iter, args.seed)
    optimum = min(reference.objective, solution.objective)
    r = max(int(reference.ranks.max()), int(solution.ranks.max()), 1)
    cap = args.cap or args.cap_factor * seconds
    target = optimum * (1 + args.tol)
    runs, first = [], math.inf  # a later rate stops once it cannot be the first to reach
    for lr in args.lrs:
        limit = min(cap, max(first, seconds))  # curves always cover cvxattn's time
        runs.append(train_adam(problem, r, lr, args.batch_size, limit, target,
                               args.init_scale, args.seed))
        if runs[-1]["reach_seconds"] is not None:
            first = min(first, runs[-1]["reach_seconds"])
    reached = [run for run in runs if run["reach_seconds"] is not None]
    best = min(reached, key=lambda run: run["reach_seconds"]) if reached \
        else min(runs, key=lambda run: best_before(run["curve"], math.inf))
    at_cvx = min(best_before(run["curve"], seconds) for run in runs)
    adam_time = best["reach_seconds"]
    program = f"{head_name}-{activation}"
    print(f"  {program}: cvxattn {seconds:.3f} s ({solution.status}), Adam "
          + (f"{adam_time:.3f} s (lr {best['lr']:g})" if adam_time is not None
             else f"not reached in {cap:.3g} s"), flush=True)
    return {
        "program": program, "n": problem.n, "s": problem.s, "d": problem.d, "c": problem.c,
        "beta": args.beta, "heads_per_block": r, "n_blocks": head.n_blocks,
        "optimum": optimum, "reference": {"objective": reference.objective,
                                          "gap": reference.gap, "status": reference.status,
                                          "seconds": ref_seconds},
        "cvxattn": {"seconds": seconds, "objective": solution.objective, "gap": solution.gap,
                    "status": solution.status, "n_iter": solution.n_iter,
                    "method": solution.method, "n_heads": solution.n_heads},
        "cap_seconds": cap, "best_lr": best["lr"], "adam_seconds": adam_time,
        "adam_gap_at_cvxattn_time": (at_cvx - optimum) / optimum, "adam": runs,
        "ratio_is_lower_bound": adam_time is None,
        "ratios": {"time": (adam_time if adam_time is not None else cap) / seconds},
    }


def run(args) -> dict:
    data = real_tokens(args.features, args.n_train, None, args.seed)
    rows = [run_program(args, data, h, a) for h, a in parse_programs(args.heads)]
    return {"rows": rows, "summary": {"data": data.source, "n_train": len(data.y_train),
                                      "grid": data.grid}}


def report(args, results: dict) -> None:
    def shown(row):
        value = row["ratios"]["time"]
        return f"> {value:.3g}×" if row["ratio_is_lower_bound"] else f"{value:.3g}×"

    table = [dict(row, cvx_s=row["cvxattn"]["seconds"], status=row["cvxattn"]["status"],
                  adam_s=row["adam_seconds"] if row["adam_seconds"] is not None
                  else "not reached", shown=shown(row)) for row in results["rows"]]
    print_table(
        f"adamw: time to P*·(1 + {args.tol:g}) on {results['summary']['data']}, n = "
        f"{results['summary']['n_train']}, β = {args.beta:g}", table,
        [Column("program"), Column("heads_per_block", "r", "d"),
         Column("optimum", "P*", ".6f"), Column("cvx_s", "cvxattn s", ".3g"),
         Column("status"), Column("best_lr", "Adam lr", "g"),
         Column("adam_s", "Adam s", ".3g", align="right"), Column("cap_seconds", "cap s", ".3g"),
         Column("adam_gap_at_cvxattn_time", "Adam gap at cvxattn s", ".2e"),
         Column("shown", "time ratio", align="right")],
        "time ratio = Adam s / cvxattn s (target ≥ 10×); '>' : Adam did not reach the target "
        "within the cap. Adam gap at cvxattn s = (P_adam − P*)/P* after cvxattn's wall time.")
