"""``python -m bench SUITE --json PATH [--quick] [options]``: run one benchmark suite.

Suites (docs/performance.md): ``cvxpy`` (against CVXPY with SCS and Clarabel), ``adamw``
(against Adam from random initialization on the same objective), ``sklearn`` (the linear MLP
head against LogisticRegression), ``scale`` (the paper's size, in data passes), ``roofline``
(achieved float32 throughput against a square matmul), ``explain`` (faithfulness of the exact
explanations against a softmax-attention head's; docs/explain.md). Each prints a table of
ratios against a peer measured in the same run and writes every raw number, the configuration
and the environment (versions, CPUs, threads, command line, date) to the JSON file.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch
from threadpoolctl import threadpool_limits

from . import adam, explain, ladder, logreg, roofline, scale
from .common import write_results

SUITES = {"cvxpy": ladder, "adamw": adam, "sklearn": logreg, "scale": scale,
          "roofline": roofline, "explain": explain}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for name, module in SUITES.items():
        p = sub.add_parser(name, help=module.__doc__.split("\n")[0],
                           description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--json", required=True, metavar="PATH",
                       help="write all raw numbers here (strict JSON, written atomically)")
        p.add_argument("--quick", action="store_true",
                       help="tiny sizes that finish in seconds (for tests; not a benchmark)")
        p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's "
                       "own; 1 with --quick)")
        p.add_argument("--seed", type=int, default=0, help="seed of data, gates and inits")
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the suite, print its tables, write its JSON; return 0."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    module = SUITES[args.suite]
    try:
        module.resolve(args)
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads: expected a positive integer, got {args.threads}")
    except ValueError as error:
        parser.error(str(error))
    threads = torch.get_num_threads()
    wanted = args.threads or (1 if args.quick else None)
    torch.set_num_threads(wanted or threads)
    try:
        # BLAS pools (NumPy's, SciPy's: scikit-learn and CVXPY use them) get the same number of
        # threads as torch; an oversubscribed OpenBLAS pool is many times slower on a busy
        # machine
        with threadpool_limits(limits=wanted):
            start = time.perf_counter()
            results = module.run(args)
            config = dict(vars(args), command=shlex.join(["python", "-m", "bench", *argv]),
                          seconds=time.perf_counter() - start)
            module.report(args, results)
            path = write_results(args.json, args.suite, config, results["rows"],
                                 results.get("summary"))
    finally:
        torch.set_num_threads(threads)
    print(f"raw numbers: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
