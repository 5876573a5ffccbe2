"""Suite ``cvxpy``: cvxattn against a generic conic solver (CVXPY with SCS and Clarabel).

For each program, a ladder of sample sizes n = n_start, 2·n_start, … (fixed small s, d, c, gates
and groups; synthetic planted data, :func:`bench.common.planted_data`) is handed to CVXPY
(:func:`cvxattn.solvers.reference.solve_cvxpy`: the head's map written out as a dense matrix,
log-sum-exp loss, one nuclear norm per block) with each solver, every attempt in its own process
killed at ``--time-limit`` seconds (imports included) and capped at ``--memory-limit`` GiB. A
ladder stops at its first failure (time limit, out of memory, error, or a status other than
optimal / optimal_inaccurate, which cvxattn reports as ``"inaccurate"``). Every process first
solves the same program on n = 2c samples, untimed, so that neither side pays for code loaded
lazily on first use. On the largest n that
some solver solved, cvxattn runs (each method of ``--methods``, in its own process) to a
certified relative gap ``--tol``; that guarantees an objective within ``--tol`` of CVXPY's
(P ≤ P* + tol·|P| ≤ P_cvxpy + tol·|P|).

Measured: CVXPY's time (the whole ``solve_cvxpy`` call — map matrix, compilation, solve — minus
the time of the certificate it computes at the end, which is cvxattn's code; the time of writing
the map matrix out is recorded separately as well), cvxattn's time to first reach CVXPY's
objective to ``--tol`` relative (the first checkpoint of the solver's history at or below it;
else the whole solve), its time to the certificate, and the peak memory of each process above
its post-import, post-warm-up, post-data baseline. Peer: the best CVXPY solver on that instance
(the faster one among those with status optimal, else among the inaccurate ones). Ratios:
time(best CVXPY)/time(cvxattn) (target ≥ 100×) and memory(best CVXPY)/memory(cvxattn)
(target ≥ 10×).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from .common import (Column, _physical_memory, check_positive, fill_defaults, fmt_ratio,
                     make_head, memory_mib, parse_programs, planted_data, print_table, ratio,
                     run_isolated, square_grid)

SOLVED = ("optimal", "inaccurate")  # cvxattn.Status of CVXPY's optimal / optimal_inaccurate


def add_arguments(parser) -> None:
    parser.add_argument("--heads", nargs="+", metavar="PROGRAM",
                        help="programs (e.g. mlp-gated; a head name means both activations; "
                             "default: all ten, mlp-linear with --quick)")
    parser.add_argument("--solvers", nargs="+", default=["SCS", "CLARABEL"],
                        choices=["SCS", "CLARABEL"], help="CVXPY solvers to ladder")
    parser.add_argument("--methods", nargs="+", default=["auto", "factorized"],
                        choices=["auto", "fista", "factorized"], help="cvxattn methods")
    parser.add_argument("--s", type=int, default=6, help="tokens per sample (grid: the most "
                        "square h×w; default 6 = 2×3)")
    parser.add_argument("--d", type=int, default=4, help="features per token (default 4)")
    parser.add_argument("--c", type=int, default=4, help="classes (default 4)")
    parser.add_argument("--gates", type=int, default=2, help="gates m of gated heads (2)")
    parser.add_argument("--groups", type=int, default=2, help="B-FNO groups (must divide d, c)")
    parser.add_argument("--beta", type=float, default=1e-2, help="β (default 1e-2)")
    parser.add_argument("--n-start", type=int, help="first n of the ladder (64; 16 --quick)")
    parser.add_argument("--max-n", type=int, help="last n of the ladder (2**20; 16 --quick)")
    parser.add_argument("--time-limit", type=float, help="seconds per CVXPY attempt and per "
                        "cvxattn run (600; 60 --quick)")
    parser.add_argument("--memory-limit", type=float, help="GiB of address space per process "
                        "(default: 80%% of physical memory)")
    parser.add_argument("--tol", type=float, default=1e-5, help="relative tolerance to reach "
                        "CVXPY's objective, and cvxattn's certified gap (1e-5)")
    parser.add_argument("--max-iter", type=int, default=100_000, help="cvxattn iteration limit")


def resolve(args) -> None:
    """Fill the size defaults that depend on ``--quick``; validate."""
    memory = round(0.8 * _physical_memory() / 2**30, 1)
    fill_defaults(args, n_start=(16, 64), max_n=(16, 2**20), time_limit=(60.0, 600.0),
                  memory_limit=(memory, memory), heads=(["mlp-linear"], None))
    parse_programs(args.heads)  # ValueError naming --heads
    check_positive(args, "s", "d", "c", "gates", "groups", "beta", "n_start", "max_n",
                   "time_limit", "memory_limit", "tol", "max_iter")
    if args.n_start < args.c or args.max_n < args.n_start:
        raise ValueError(f"--n-start/--max-n: expected c = {args.c} ≤ n_start ≤ max_n, got "
                         f"{args.n_start} and {args.max_n}")
    if args.d % args.groups or args.c % args.groups:
        raise ValueError(f"--groups: expected B dividing d = {args.d} and c = {args.c}, got "
                         f"{args.groups}")


# ------------------------------------------------------------------- child processes
def _problem(spec: dict):
    import cvxattn as ca

    X, y = planted_data(spec["n"], spec["s"], spec["d"], spec["c"], seed=spec["seed"],
                        dtype=np.float64)
    head = make_head(spec["head"], spec["activation"], square_grid(spec["s"]), spec["gates"],
                     spec["groups"], spec["seed"])
    return ca.Problem(head, X, y, beta=spec["beta"])


def _warm_up(solve, spec: dict) -> None:
    """Run ``solve`` on the same program with n = 2c samples, untimed, best effort: it pages in
    the code the measured solve will run (libraries load lazily), so that neither the time nor
    the memory above the baseline is the first call's."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            solve(_problem(dict(spec, n=2 * spec["c"])))
    except Exception:  # noqa: BLE001 - a failed warm-up only means a colder measurement
        pass


def cvxpy_child(spec: dict, marks) -> dict:
    """In a child: solve with CVXPY; the time excludes the final certificate (ours)."""
    import cvxpy  # noqa: F401  (imported before the baseline: not part of the solve)

    from cvxattn.solvers import certify
    from cvxattn.solvers.reference import map_matrix, solve_cvxpy

    _warm_up(lambda problem: solve_cvxpy(problem, solver=spec["solver"]), spec)
    problem = _problem(spec)
    marks.mark("baseline")
    start = time.perf_counter()
    solution = solve_cvxpy(problem, solver=spec["solver"])
    total = time.perf_counter() - start
    marks.mark("solved")
    start = time.perf_counter()
    certify(problem, solution.blocks, solution.intercept)
    certificate = time.perf_counter() - start
    start = time.perf_counter()
    map_matrix(problem)  # included in "seconds": the program must be written out for CVXPY
    matrix = time.perf_counter() - start
    return {"seconds": max(total - certificate, 0.0), "seconds_with_certificate": total,
            "map_matrix_seconds": matrix,
            "objective": solution.objective, "gap": solution.gap, "status": solution.status,
            "n_heads": solution.n_heads}


def cvxattn_child(spec: dict, marks) -> dict:
    """In a child: solve with cvxattn to the certified gap; when it first reached the target."""
    import cvxattn as ca

    _warm_up(lambda problem: ca.solve(problem, method=spec["method"], tol=1e-3, max_iter=50),
             spec)
    problem = _problem(spec)
    marks.mark("baseline")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ca.ConvergenceWarning)  # the status says it
        solution = ca.solve(problem, method=spec["method"], tol=spec["tol"],
                            max_iter=spec["max_iter"], seed=spec["seed"])
    wall = time.perf_counter() - start
    marks.mark("solved")
    target = spec["target"] + spec["tol"] * abs(spec["target"])
    reach = next((h.seconds for h in solution.history if h.objective <= target), None)
    if reach is None and solution.objective <= target:
        reach = wall
    return {"seconds": wall, "reach_seconds": reach, "objective": solution.objective,
            "gap": solution.gap, "status": solution.status, "n_iter": solution.n_iter,
            "n_heads": solution.n_heads, "method": solution.method}


# ------------------------------------------------------------------------------ the suite
def _spec(args, head, activation, n) -> dict:
    return {"head": head, "activation": activation, "n": n, "s": args.s, "d": args.d,
            "c": args.c, "gates": args.gates, "groups": args.groups, "beta": args.beta,
            "seed": args.seed}


def _attempt(args, spec: dict, solver: str) -> dict:
    out = run_isolated("bench.ladder:cvxpy_child", dict(spec, solver=solver),
                       args.time_limit, args.memory_limit)
    result = out["result"] or {}
    solved = out["ok"] and result.get("status") in SOLVED
    failure = out["failure"] or (None if solved else f"status {result.get('status')}")
    return {"solver": solver, "n": spec["n"], "solved": solved, "failure": failure,
            "error": out["error"], **result, "memory_mib": memory_mib(out),
            "wall_seconds": out["wall_seconds"]}


def run_program(args, head: str, activation: str) -> dict:
    """The ladders of one program, then cvxattn on the largest instance solved."""
    program = f"{head}-{activation}"
    attempts, largest = [], {}
    for solver in args.solvers:
        n = args.n_start
        while n <= args.max_n:
            attempt = _attempt(args, _spec(args, head, activation, n), solver)
            attempts.append(attempt)
            print(f"  {program} {solver} n={n}: "
                  + (f"{attempt['seconds']:.2f} s ({attempt['status']})" if attempt["solved"]
                     else f"failed ({attempt['failure']})"), flush=True)
            if not attempt["solved"]:
                break
            largest[solver] = n
            n *= 2
    row = {"program": program, "largest_n": largest, "ladder": attempts, "cvxattn": {},
           "ratios": {}}
    if not largest:
        return row
    n_star = max(largest.values())
    solved = [a for a in attempts if a["n"] == n_star and a["solved"]]
    accurate = [a for a in solved if a["status"] == "optimal"] or solved
    best = min(accurate, key=lambda a: a["seconds"])
    target = min(a["objective"] for a in solved)
    row.update(n=n_star, best_solver=best["solver"], cvxpy_seconds=best["seconds"],
               cvxpy_memory_mib=best["memory_mib"]["delta"], target_objective=target)
    for method in args.methods:
        spec = dict(_spec(args, head, activation, n_star), method=method, tol=args.tol,
                    max_iter=args.max_iter, target=target)
        out = run_isolated("bench.ladder:cvxattn_child", spec, args.time_limit,
                           args.memory_limit)
        result = out["result"] or {}
        run = {"failure": out["failure"], "error": out["error"], **result,
               "memory_mib": memory_mib(out), "wall_seconds": out["wall_seconds"]}
        if result:
            run["relative_to_target"] = (result["objective"] - target) / abs(target)
            run["reached"] = run["relative_to_target"] <= args.tol
        row["cvxattn"][method] = run
        row["ratios"][f"time_{method}"] = ratio(best["seconds"], result.get("reach_seconds"))
        row["ratios"][f"memory_{method}"] = ratio(best["memory_mib"]["delta"],
                                                  run["memory_mib"]["delta"])
        print(f"  {program} cvxattn {method} n={n_star}: "
              + (f"reached in {result['reach_seconds']:.3f} s, certified {result['seconds']:.3f}"
                 f" s ({result['status']})" if result.get("reach_seconds") is not None
                 else f"did not reach ({out['failure'] or result.get('status')})"), flush=True)
    return row


def run(args) -> dict:
    rows = [run_program(args, h, a) for h, a in parse_programs(args.heads)]
    return {"rows": rows, "summary": {
        "sizes": {"s": args.s, "grid": square_grid(args.s), "d": args.d, "c": args.c,
                  "gates": args.gates, "groups": args.groups, "beta": args.beta}}}


def report(args, results: dict) -> None:
    table = []
    for row in results["rows"]:
        for method in args.methods:
            run = row["cvxattn"].get(method, {})
            table.append({"program": row["program"], "n": row.get("n"),
                          "peer": row.get("best_solver"), "cvxpy_s": row.get("cvxpy_seconds"),
                          "cvxpy_mib": row.get("cvxpy_memory_mib"), "method": method,
                          "reach_s": run.get("reach_seconds"), "cert_s": run.get("seconds"),
                          "mib": run.get("memory_mib", {}).get("delta"),
                          "time": row["ratios"].get(f"time_{method}"),
                          "memory": row["ratios"].get(f"memory_{method}")})
    print_table(
        f"cvxpy: largest n CVXPY solves in {args.time_limit:g} s (s={args.s}, d={args.d}, "
        f"c={args.c}, m={args.gates}, B={args.groups}, β={args.beta:g}); cvxattn to "
        f"{args.tol:g} of CVXPY's objective", table,
        [Column("program"), Column("n", fmt="d"), Column("peer", "best CVXPY"),
         Column("cvxpy_s", "CVXPY s", ".3g"), Column("cvxpy_mib", "CVXPY MiB", ".4g"),
         Column("method", "cvxattn"), Column("reach_s", "reach s", ".3g"),
         Column("cert_s", "certified s", ".3g"), Column("mib", "MiB", ".4g"),
         Column("time", "time ratio", fmt_ratio), Column("memory", "memory ratio", fmt_ratio)],
        "time ratio = CVXPY s / reach s (target ≥ 100×); memory ratio = CVXPY MiB / MiB "
        "(target ≥ 10×). MiB: peak RSS of the process above its post-import, post-data "
        "baseline (floored at 1 MiB).")
