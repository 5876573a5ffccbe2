"""Suite ``roofline``: achieved float32 throughput of each head's data pass against matmul.

For each program: random tokens X (n, s, d) (default n = 2000, s = 49 on a 7×7 grid, d = 100,
c = 100) and random heads, r = ``--r`` per block (gated heads: the paper's gates, m = 100 for the
MLP and 5 otherwise; B-FNO B = 5), all float32. The data pass is what a solver repeats every
iteration: the network's pooled logits of all n samples, mean cross-entropy, and the gradients
in (W1, W2, b), on the head's lifted data computed once beforehand (masks, Gram matrices, FFTs;
the lift is timed and counted separately).

Floating-point operations are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one
pass (matrix products, batched products, einsums lowered to them, convolutions); it does not
count FFTs or elementwise work, so the FNO heads' FFT work is missing from their count and their
achieved rate is understated. Time: median of ``--repeats`` passes after two warm-ups.
Peer, measured in the same run with the same threads: a square float32 matrix product of size
``--matmul-size`` (2·N³ operations). Ratio: achieved GFLOP/s / matmul GFLOP/s (target ≥ 50%).
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .common import (Column, bfno_groups, check_positive, data_pass, fill_defaults, make_head,
                     median_seconds, parse_programs, print_table, ratio, square_grid)


def add_arguments(parser) -> None:
    parser.add_argument("--heads", nargs="+", metavar="PROGRAM",
                        help="programs (default: all ten)")
    parser.add_argument("--n", type=int, help="samples in the batch (2000; 64 with --quick)")
    parser.add_argument("--s", type=int, help="tokens, a square grid (49; 16 with --quick)")
    parser.add_argument("--d", type=int, help="features per token (100; 8 with --quick)")
    parser.add_argument("--c", type=int, help="classes (100; 10 with --quick)")
    parser.add_argument("--r", type=int, default=8, help="heads per block (default 8)")
    parser.add_argument("--gates", type=int, help="gates m of gated heads (default: 100 for "
                        "the MLP, 5 else; 2 with --quick)")
    parser.add_argument("--groups", type=int, help="B-FNO groups (default 5, or the largest "
                        "that divides d and c)")
    parser.add_argument("--repeats", type=int, help="timed passes (5; 2 with --quick)")
    parser.add_argument("--matmul-size", type=int, help="N of the N×N float32 matmul peer "
                        "(4096; 256 with --quick)")


def resolve(args) -> None:
    parse_programs(args.heads)  # ValueError naming --heads
    fill_defaults(args, n=(64, 2000), s=(16, 49), d=(8, 100), c=(10, 100), gates=(2, None),
                  repeats=(2, 5), matmul_size=(256, 4096))
    check_positive(args, "n", "s", "d", "c", "r", "repeats", "matmul_size")
    if args.groups is None:
        args.groups = bfno_groups(args.d, args.c)
    check_positive(args, "groups", *(["gates"] if args.gates is not None else []))
    if args.d % args.groups or args.c % args.groups:
        raise ValueError(f"--groups: expected B dividing d = {args.d} and c = {args.c}, got "
                         f"{args.groups}")


def count_flops(fn) -> int:
    """Floating-point operations of one call of ``fn`` as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peer(size: int, repeats: int, seed: int) -> dict:
    """Median time and GFLOP/s of an N×N float32 product (2·N³ operations)."""
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(size, size, generator=generator)  # (N, N)
    B = torch.randn(size, size, generator=generator)  # (N, N)
    seconds = median_seconds(lambda: A @ B, repeats, warmup=1)
    return {"size": size, "seconds": seconds, "gflops": 2 * size**3 / seconds / 1e9}


def measure(args, head_name: str, activation: str) -> dict:
    """FLOPs and median time of one data pass of this program's network, float32."""
    generator = torch.Generator().manual_seed(args.seed)
    head = make_head(head_name, activation, square_grid(args.s), args.gates, args.groups,
                     args.seed).bind(args.s, args.d, args.c)
    X = torch.randn(args.n, args.s, args.d, generator=generator)  # (n, s, d)
    y = torch.randint(0, args.c, (args.n,), generator=generator)  # (n,)
    G = head.n_blocks
    W1 = 0.1 * torch.randn((G, args.r, *head.w1_shape), generator=generator)  # (G, r, *w1)
    W2 = 0.1 * torch.randn((G, args.r, *head.w2_shape), generator=generator)  # (G, r, *w2)
    b = torch.zeros(args.c)  # (c,)
    start = time.perf_counter()
    data = head.lift(X, design=False)
    lift_seconds = time.perf_counter() - start
    lift_flops = count_flops(lambda: head.lift(X, design=False))
    run = data_pass(head, W1, W2, b, data, y)
    flops = count_flops(run)
    seconds = median_seconds(run, args.repeats, warmup=2)
    return {"program": f"{head_name}-{activation}", "n_blocks": G,
            "heads_per_block": args.r, "flops": flops, "seconds": seconds,
            "gflops": flops / seconds / 1e9, "lift_flops": lift_flops,
            "lift_seconds": lift_seconds, "fft_not_counted": head_name in ("fno", "bfno")}


def run(args) -> dict:
    peer = matmul_peer(args.matmul_size, args.repeats, args.seed)
    print(f"  matmul {args.matmul_size}²: {peer['gflops']:.1f} GFLOP/s", flush=True)
    rows = []
    for head, activation in parse_programs(args.heads):
        row = measure(args, head, activation)
        row["ratios"] = {"throughput": ratio(row["gflops"], peer["gflops"])}
        rows.append(row)
        print(f"  {row['program']}: {row['flops'] / 1e9:.3g} GFLOP in {row['seconds']:.4f} s "
              f"= {row['gflops']:.2f} GFLOP/s", flush=True)
    return {"rows": rows, "summary": {"matmul": peer, "sizes": {
        "n": args.n, "s": args.s, "grid": square_grid(args.s), "d": args.d, "c": args.c,
        "r": args.r, "gates": args.gates, "groups": args.groups}}}


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def report(args, results: dict) -> None:
    peer = results["summary"]["matmul"]
    table = [dict(row, gflop=row["flops"] / 1e9, share=row["ratios"]["throughput"],
                  fft="not counted" if row["fft_not_counted"] else "")
             for row in results["rows"]]
    print_table(
        f"roofline: float32 data pass (forward + backward), n = {args.n}, s = {args.s}, "
        f"d = {args.d}, c = {args.c}, r = {args.r} heads per block; peer: "
        f"{peer['size']}² matmul at {peer['gflops']:.1f} GFLOP/s", table,
        [Column("program"), Column("gflop", "GFLOP/pass", ".4g"),
         Column("seconds", "pass s", ".3g"), Column("gflops", "GFLOP/s", ".3g"),
         Column("share", "of matmul", _percent), Column("fft", "FFT work")],
        "of matmul = achieved GFLOP/s / matmul GFLOP/s (target ≥ 50%). FLOPs counted by "
        "torch.utils.flop_counter.FlopCounterMode: matrix products only; FFT and elementwise "
        "work are not counted, so the FNO/B-FNO rates are understated.")
