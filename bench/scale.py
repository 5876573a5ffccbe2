"""Suite ``scale``: the factorized solver at the paper's size, counted in data passes.

Synthetic data at the size of the paper's experiment (SPEC.md §6): n = 50,000 samples of
s = 49 tokens (7×7 grid; ``--s 196`` for 14×14) with d = 100 features and c = 100 classes,
labels drawn from a planted network (:func:`bench.common.planted_data`, seeded). Gated heads use
the paper's gates (m = 100 for the MLP, 5 otherwise), the B-FNO B = 5 groups.

For each program and each ``--n``, one process (killed at ``--time-limit``, address space capped
at ``--memory-limit`` GiB) solves a tiny instance untimed (n = c, one iteration: libraries
load their code lazily, which is not what is measured), builds the data, then solves with
``--method`` (default ``"factorized"``) in float32 to a certified relative gap ``--tol`` (1e-3)
and records the time, status, gap, number of heads and the peak memory (ru_maxrss above the
post-data baseline, and the absolute peak). Then, in the same process, it times one full-batch
data pass of the network with the solution's heads: forward (pooled logits of all n samples)
+ mean cross-entropy + backward to (W1, W2, b), on the head's lifted data computed once (as the
solver does; the lift is timed separately). Median of ``--pass-repeats`` after one warm-up. If the
full batch does not fit in memory, the pass runs in chunks of samples (recorded); if the
process dies during the pass (time limit, memory), the solve's numbers are still reported. A
process killed during the solve reports its method and last checkpoint (the certified gap and,
for the factorized solver, the estimated one), saved through ``solve(callback=...)``.

Ratio: passes per solve = solve time / pass time (the peer: what one gradient evaluation of the
same network on the same data costs in the same process). Targets (s = 49): every head ≤ 10 min
and ≤ 8 GiB. With several ``--n``, the exponent b of time ∝ n^b is fitted per head.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from .common import (Column, _physical_memory, bfno_groups, check_positive, data_pass,
                     fill_defaults, fit_exponent, fmt_ratio, make_head, median_seconds, memory_mib,
                     parse_programs, planted_data, print_table, ratio, run_isolated,
                     square_grid)


def add_arguments(parser) -> None:
    parser.add_argument("--heads", nargs="+", metavar="PROGRAM",
                        help="programs (default: all ten; mlp-linear with --quick)")
    parser.add_argument("--n", type=int, nargs="+", help="sample sizes (default 50000; 300 "
                        "600 with --quick)")
    parser.add_argument("--s", type=int, help="tokens, a square grid (49 = 7×7; 196 = 14×14; "
                        "16 with --quick)")
    parser.add_argument("--d", type=int, help="features per token (100; 8 with --quick)")
    parser.add_argument("--c", type=int, help="classes (100; 10 with --quick)")
    parser.add_argument("--gates", type=int, help="gates m of gated heads (default: 100 for "
                        "the MLP, 5 else; 2 with --quick)")
    parser.add_argument("--groups", type=int, help="B-FNO groups (default 5, or the largest "
                        "that divides d and c)")
    parser.add_argument("--beta", type=float, default=1e-3, help="β (default 1e-3)")
    parser.add_argument("--method", choices=("factorized", "auto", "fista", "hybrid"), default="factorized",
                        help="solver (default factorized; auto lets cvxattn choose by size "
                        "and memory)")
    parser.add_argument("--tol", type=float, default=1e-3, help="certified relative gap")
    parser.add_argument("--max-iter", type=int, default=5000, help="iteration limit")
    parser.add_argument("--planted-heads", type=int, default=4,
                        help="heads of the planted network that makes the labels")
    parser.add_argument("--snr", type=float, default=3.0,
                        help="standard deviation of the planted logits (label noise: softmax)")
    parser.add_argument("--pass-repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="torch device of the solve: cpu, or "
                        "cuda where a GPU exists (peak GPU memory then comes from CUDA's "
                        "allocator)")
    parser.add_argument("--time-limit", type=float, help="seconds of solving per process "
                        "(1800, 3× the target; 120 with --quick)")
    parser.add_argument("--memory-limit", type=float, help="GiB of address space per process "
                        "(default: 80%% of physical memory)")


def resolve(args) -> None:
    memory = round(0.8 * _physical_memory() / 2**30, 1)
    fill_defaults(args, heads=(["mlp-linear"], None), n=([300, 600], [50_000]), s=(16, 49),
                  d=(8, 100), c=(10, 100), gates=(2, None), time_limit=(120.0, 1800.0),
                  memory_limit=(memory, memory))
    parse_programs(args.heads)  # ValueError naming --heads
    args.n = sorted(args.n)
    if args.groups is None:
        args.groups = bfno_groups(args.d, args.c)
    check_positive(args, "n", "s", "d", "c", "groups", "beta", "tol", "max_iter",
                   "planted_heads", "snr", "pass_repeats", "time_limit", "memory_limit",
                   *(["gates"] if args.gates is not None else []))
    if min(args.n) < args.c:
        raise ValueError(f"--n: expected every n ≥ c = {args.c}, got {args.n}")
    if args.d % args.groups or args.c % args.groups:
        raise ValueError(f"--groups: expected B dividing d = {args.d} and c = {args.c}, got "
                         f"{args.groups}")


def scale_child(spec: dict, marks) -> dict:
    """In a child: data, factorized solve (float32), then the timed full-batch data pass."""
    import torch

    import cvxattn as ca

    head = make_head(spec["head"], spec["activation"], square_grid(spec["s"]), spec["gates"],
                     spec["groups"], spec["seed"])

    def problem_of(n: int):
        X, y = planted_data(n, spec["s"], spec["d"], spec["c"], spec["planted_heads"],
                            snr=spec["snr"], seed=spec["seed"], dtype=np.float32)
        return ca.Problem(head, X, y, beta=spec["beta"], dtype=torch.float32,
                          device=spec.get("device", "cpu"))

    def solve(problem, max_iter, callback=None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ca.ConvergenceWarning)  # the status says it
            return ca.solve(problem, method=spec["method"], tol=spec["tol"], max_iter=max_iter,
                            seed=spec["seed"], callback=callback)

    def progress(checkpoint) -> None:
        """Keep the latest checkpoint: a run killed at its time limit still says how far it
        got (its certified gap then, and the factorized solver's estimated gap)."""
        marks.partial({"method": method, "last_checkpoint": {
            "seconds": checkpoint.seconds, "iteration": checkpoint.iteration,
            "objective": checkpoint.objective, "lower_bound": checkpoint.lower_bound,
            "gap": checkpoint.gap, "estimated_gap": checkpoint.estimated_gap}})

    try:  # warm-up, best effort: pages in the code (libraries load lazily)
        solve(problem_of(spec["c"]), 1)
    except Exception:  # noqa: BLE001 - a failed warm-up only means a colder measurement
        pass
    problem = problem_of(spec["n"])
    cuda = problem.X.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        allocated = torch.cuda.memory_allocated()
    marks.mark("baseline")
    method = ca.solvers.plan(problem, spec["method"]).method  # what solve will choose
    marks.partial({"method": method})  # known even if the first checkpoint never comes
    start = time.perf_counter()
    solution = solve(problem, spec["max_iter"], progress)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    marks.mark("solved")
    net = solution.to_network()
    result = {"seconds": seconds, "status": solution.status, "gap": solution.gap,
              "objective": solution.objective, "lower_bound": solution.lower_bound,
              "n_heads": solution.n_heads, "heads_per_block": int(net.W1.shape[1]),
              "n_iter": solution.n_iter, "n_passes": solution.n_passes,
              "method": solution.method,
              "certificate": str(solution.certificate),
              "history": [[h.seconds, h.objective, h.gap] for h in solution.history]}
    if cuda:  # GPU memory of the solve above the data, from CUDA's caching allocator
        result["gpu_peak_mib"] = (torch.cuda.max_memory_allocated() - allocated) / 2**20
        result["device_name"] = torch.cuda.get_device_name()
    marks.partial(result)  # kept if the pass below is killed or runs out of memory
    del solution
    intercept = net.intercept if net.intercept is not None else problem.X.new_zeros(problem.c)
    # the pass is timed in the tokens' dtype (a float64 finish returns float64 heads)
    W1, W2, intercept = (t.detach().to(problem.X.dtype) for t in (net.W1, net.W2, intercept))
    return dict(result, **time_pass(problem, W1, W2, intercept, spec["pass_repeats"]))


def time_pass(problem, W1, W2, b, repeats: int) -> dict:
    """Median time of one full-batch data pass (forward + loss + backward) on lifted data.

    When the full batch does not fit in memory, the pass is done in k = 2, 4, 8, … chunks of
    samples, each lifted inside the pass (the same arithmetic, plus the lift): ``pass_chunks``
    says which, ``pass_includes_lift`` whether the lift is in the time."""
    head, X, y = problem.head, problem.X, problem.y  # (n, s, d), (n,)
    n, chunks, error = len(y), 1, None
    while chunks <= n:
        try:
            if chunks == 1:
                start = time.perf_counter()
                data = head.lift(X, design=False)
                lift_seconds = time.perf_counter() - start
                run = data_pass(head, W1, W2, b, data, y)
            else:
                lift_seconds = None
                parts = [slice(k, min(k + -(-n // chunks), n))
                         for k in range(0, n, -(-n // chunks))]

                def run():
                    for rows in parts:
                        data = head.lift(X[rows], design=False)
                        data_pass(head, W1, W2, b, data, y[rows])()

            return {"pass_seconds": median_seconds(run, repeats, warmup=1),
                    "lift_seconds": lift_seconds, "pass_chunks": chunks,
                    "pass_includes_lift": chunks > 1, "pass_error": error}
        except (MemoryError, RuntimeError) as exc:  # a failed allocation: try smaller chunks
            if not isinstance(exc, MemoryError) and "allocate" not in str(exc):
                raise
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
            data = run = None
            chunks *= 4
    return {"pass_seconds": None, "pass_chunks": None, "pass_error": error}


def run(args) -> dict:
    rows = []
    for head, activation in parse_programs(args.heads):
        program = f"{head}-{activation}"
        for n in args.n:
            spec = {"head": head, "activation": activation, "n": n, "s": args.s, "d": args.d,
                    "c": args.c, "gates": args.gates, "groups": args.groups,
                    "beta": args.beta, "method": args.method, "tol": args.tol,
                    "max_iter": args.max_iter,
                    "planted_heads": args.planted_heads, "snr": args.snr,
                    "pass_repeats": args.pass_repeats, "seed": args.seed,
                    "device": args.device}
            out = run_isolated("bench.scale:scale_child", spec, args.time_limit,
                               args.memory_limit)
            # a process that died after its solve still reports the solve (not the pass)
            result = out["result"] or out["partial"] or {}
            memory = memory_mib(out)
            solved = "status" in result  # else at most the last checkpoint of a killed run
            row = {"program": program, "n": n, "s": args.s, "d": args.d, "c": args.c,
                   "failure": out["failure"], "error": out["error"], **result,
                   "memory_mib": memory, "wall_seconds": out["wall_seconds"],
                   "ratios": {"passes": ratio(result.get("seconds"),
                                              result.get("pass_seconds"))}}
            rows.append(row)
            print(f"  {program} n={n}: " + (
                f"{result['seconds']:.2f} s ({result['status']}, gap {result['gap']:.1e}, "
                f"{result['n_heads']} heads), pass "
                + (f"{result['pass_seconds']:.3f} s, " if result.get("pass_seconds")
                   else f"failed ({out['error']}), ") +
                f"{memory['delta']:.0f} MiB" if solved else f"failed ({out['failure']}: "
                f"{out['error']}){_reached(result)}"), flush=True)
    exponents = {}
    if len(args.n) > 1:
        for head, activation in parse_programs(args.heads):
            program = f"{head}-{activation}"
            mine = [r for r in rows if r["program"] == program]
            exponents[program] = {
                "time": fit_exponent([r["n"] for r in mine], [r.get("seconds") for r in mine]),
                "pass": fit_exponent([r["n"] for r in mine],
                                     [r.get("pass_seconds") for r in mine]),
                "memory": fit_exponent([r["n"] for r in mine],
                                       [r["memory_mib"]["delta"] for r in mine])}
    return {"rows": rows, "summary": {"grid": square_grid(args.s), "exponents": exponents}}


def _reached(row: dict) -> str:
    """', last certified gap G at T s' for a run stopped before its end, when it got that far;
    the factorized solver's estimated gap beside it (it proves a bound only near the end)."""
    last = row.get("last_checkpoint")
    if not last or "status" in row:
        return ""

    def finite(gap) -> bool:  # strict JSON keeps an infinite gap (no proven bound) as a string
        return isinstance(gap, (int, float)) and math.isfinite(gap)

    gap, estimate = last["gap"], last.get("estimated_gap")
    text = f"last certified gap {gap:.1e}" if finite(gap) else "no gap certified yet"
    if finite(estimate):
        text += f" (estimated {estimate:.1e})"
    return f", {text} at {last['seconds']:.0f} s"


def report(args, results: dict) -> None:
    table = [dict(row, mib=row["memory_mib"]["delta"], peak=row["memory_mib"]["peak"],
                  passes=row["ratios"]["passes"],
                  failure=(row["failure"] + _reached(row)) if row["failure"] else None)
             for row in results["rows"]]
    print_table(
        f"scale: {args.method}, float32, tol {args.tol:g}; s = {args.s}, d = {args.d}, "
        f"c = {args.c}, β = {args.beta:g}", table,
        [Column("program"), Column("n", fmt="d"), Column("method"),
         Column("seconds", "solve s", ".4g"),
         Column("status"), Column("gap", fmt=".1e"), Column("n_heads", "heads", "d"),
         Column("n_iter", "its", "d"), Column("n_passes", "data passes", "d"),
         Column("pass_seconds", "pass s", ".3g"), Column("passes", "passes/solve", fmt_ratio),
         Column("mib", "MiB above data", ".5g"), Column("peak", "peak MiB", ".5g"),
         Column("failure")],
        "passes/solve = solve s / (one full-batch forward + backward of the solution's "
        "network, same process). data passes: the solver's own count (Solution.n_passes; "
        "target ≤ 3 × its + 50)."
        + (" Targets at s = 49: solve ≤ 600 s, peak ≤ 8192 MiB." if args.s == 49 else ""))
    exponents = results["summary"]["exponents"]
    if exponents:
        print_table("scale: growth with n, exponent b of a least-squares fit of value ∝ n^b",
                    [{"program": k, **v} for k, v in exponents.items()],
                    [Column("program"), Column("time", "solve time", ".2f"),
                     Column("pass", "pass time", ".2f"), Column("memory", "memory", ".2f")])
