"""The same code path on a GPU (issue: ``device="cuda"``): skipped where no GPU exists.

Every program solved on CUDA reaches the CPU optimum, the solution stays on the device, and the
memory plan's estimate bounds what CUDA's allocator actually used."""

from __future__ import annotations

import pytest
import torch

import cvxattn as ca
from cvxattn.solvers.memory import plan
from tests.helpers import labels, ten_heads, tokens

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GRID = (2, 3)
HEADS = ten_heads(grid=GRID)


@pytest.mark.parametrize("method", ["factorized", "fista"])
@pytest.mark.parametrize("name,head", HEADS, ids=[n for n, _ in HEADS])
def test_cuda_solve_matches_the_cpu_optimum(name, head, method):
    X, y = tokens(0, n=30, s=6, d=4), labels(0, n=30, c=6)
    cpu = ca.solve(ca.Problem(head, X, y, 0.05), method=method, tol=1e-7, max_iter=20_000)
    gpu = ca.solve(ca.Problem(head, X, y, 0.05, device="cuda"), method=method, tol=1e-7,
                   max_iter=20_000)
    assert gpu.status == "optimal" and gpu.intercept.device.type == "cuda"
    assert abs(gpu.objective - cpu.objective) <= 1e-6 * abs(cpu.objective)
    assert gpu.predict(X).device.type == "cuda"


@pytest.mark.parametrize("name,head", HEADS, ids=[n for n, _ in HEADS])
def test_memory_plan_bounds_the_allocated_peak(name, head):
    X = tokens(1, n=3000, s=36, d=20).float()
    y = labels(1, n=3000, c=10)
    bound = ca.heads.create(head.name, head.activation, n_gates=head.n_gates,
                            grid=(6, 6) if "fno" in head.name else None,
                            groups=getattr(head, "groups", None) if head.name == "bfno" else None)
    problem = ca.Problem(bound, X, y, 1e-3, dtype=torch.float32, device="cuda")
    chosen = plan(problem, "factorized")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with pytest.warns(ca.ConvergenceWarning):
        ca.solve(problem, method="factorized", tol=1e-12, max_iter=60)
    torch.cuda.synchronize()
    used = torch.cuda.max_memory_allocated() - before
    data = X.numel() * 4
    print(f"{name}: allocated {used / 2**20:.1f} MiB, planned {chosen.peak_bytes / 2**20:.1f} "
          f"MiB (tokens {data / 2**20:.1f} MiB)")
    assert used <= chosen.peak_bytes


def test_tokens_on_the_gpu_stay_there_without_a_device_argument():
    """device=None keeps the tokens' own device (the argument check must not move them)."""
    X, y = tokens(0, n=30, s=6, d=4).cuda(), labels(0, n=30, c=6)
    assert ca.Problem(ca.heads.MLP(), X, y, 0.05).X.device.type == "cuda"
