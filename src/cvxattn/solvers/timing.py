"""A time model for ``method="auto"``: the seconds of one iteration of the dense-block solvers
(FISTA, FISTA/L-BFGS) and of the factorized solver, from the head's cost model
(:meth:`cvxattn.heads.Head.cost`) and throughputs measured once per process by a short probe.

One dense iteration is a forward and an adjoint pass of the convex map plus one SVD of every
block (the prox and, every few iterations, the certificate). One factorized iteration is about
``FACTORIZED_PASSES`` network passes (the L-BFGS line search and the amortized Lanczos
certificate, measured by the scale suite) with ``PLANNED_HEADS`` heads per block. Both counts
are per iteration; the model assumes both solvers need about as many iterations, which is the
coarse part (docs/performance.md measures them). The probe times one matrix product and one
batched SVD of the problem's own block shape, so that the SVD's real cost on this machine —
which grows as p·q·min(p, q) and runs far below the matrix product's throughput — decides when
the dense blocks stop paying.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

__all__ = ["IterationTimes", "iteration_times", "FACTORIZED_PASSES"]

FACTORIZED_PASSES = 3.0  # network passes per factorized iteration, certificates amortized
_PROBE_SIDE = 256  # the matrix product of the probe: 256³ multiply-adds


@dataclass(frozen=True)
class IterationTimes:
    """Estimated seconds of one iteration of each solver, and the measured throughputs."""

    dense: float
    factorized: float
    gemm_flops: float  # flop/s of a matrix product on this device and dtype
    svd_seconds: float  # one SVD of every block, measured

    def describe(self) -> str:
        return (f"one iteration ≈ {self.dense * 1e3:.3g} ms on dense blocks (SVDs "
                f"{self.svd_seconds * 1e3:.3g} ms) vs ≈ {self.factorized * 1e3:.3g} ms "
                f"factorized (matrix products at {self.gemm_flops / 1e9:.3g} Gflop/s)")


def _median_seconds(work, repeats: int = 3) -> float:
    work()  # warm-up: the first call loads kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@functools.lru_cache(maxsize=None)
def _gemm_flops(device: str, dtype: torch.dtype) -> float:
    """flop/s of one _PROBE_SIDE³ matrix product, measured once per process."""
    A = torch.randn(_PROBE_SIDE, _PROBE_SIDE, dtype=dtype, device=device,
                    generator=torch.Generator(device=device).manual_seed(0))

    def work():
        (A @ A).sum().item()  # .item() waits for the device

    return 2 * _PROBE_SIDE ** 3 / max(_median_seconds(work), 1e-9)


@functools.lru_cache(maxsize=None)
def _svd_seconds(device: str, dtype: torch.dtype, shape: tuple[int, int, int]) -> float:
    """Seconds of one batched SVD of blocks of ``shape`` (G, p, q), measured once per shape."""
    Z = torch.randn(*shape, dtype=dtype, device=device,
                    generator=torch.Generator(device=device).manual_seed(0))

    def work():
        torch.linalg.svd(Z, full_matrices=False)[1].sum().item()

    return _median_seconds(work, repeats=1)


def iteration_times(problem, heads_per_block: int) -> IterationTimes:
    """Estimated seconds of one iteration of each solver on ``problem`` (see the module)."""
    head = problem.head
    device, dtype = str(problem.X.device), problem.X.dtype
    gemm = _gemm_flops(device, dtype)
    svd = _svd_seconds(device, dtype, (head.n_blocks, *head.block_shape))
    pooled = problem.pooled
    dense_cost = head.cost(1, pooled)
    factorized_cost = head.cost(heads_per_block, pooled)
    # with a pooled design Φ the map is two products with it (forward and adjoint)
    map_flops = (4 * dense_cost.design * problem.c if pooled and dense_cost.design
                 else dense_cost.map_flops)
    dense = problem.n * map_flops / gemm + svd
    factorized = FACTORIZED_PASSES * problem.n * factorized_cost.network_flops / gemm
    return IterationTimes(dense, factorized, gemm, svd)
