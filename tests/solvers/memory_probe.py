"""Peak resident memory of one solve, measured in this process, against its memory plan.

Run as ``python -m tests.solvers.memory_probe '{"head": "attention", "activation": "gated",
"n": 400, "method": "auto"}'``: prints one JSON line with the plan's estimate and the growth of
the peak resident set size (VmHWM, reset through /proc/self/clear_refs) from before the tokens
were made to the end of a short solve. tests/solvers/test_memory_peaks.py runs it in fresh
processes, so that nothing an earlier solve loaded or freed is counted or reused.
"""

from __future__ import annotations

import json
import sys

import torch

import cvxattn as ca
from cvxattn.solvers.memory import plan

GRID, D, C = (4, 4), 20, 10


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(head: str, activation: str, n: int, method: str = "auto",
            dtype: str = "float64", iterations: int = 3) -> dict:
    gates = {"n_gates": 5, "seed": 1} if activation == "gated" else {}
    model = ca.heads.create(head, activation, grid=GRID if "fno" in head else None,
                            groups=2 if head == "bfno" else None, **gates)
    torch_dtype = getattr(torch, dtype)
    y = torch.arange(n) % C
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak (VmHWM) starts again from the present size
    base = _status("VmRSS")
    X = torch.empty(n, GRID[0] * GRID[1], D, dtype=torch_dtype)
    generator = torch.Generator().manual_seed(0)
    for start in range(0, n, 256):  # filled in slices: no temporary as large as X
        rows = X[start:start + 256]
        rows.copy_(torch.randn(rows.shape, generator=generator, dtype=torch_dtype))
    problem = ca.Problem(model, X, y, beta=1e-3, dtype=torch_dtype)
    chosen = plan(problem, method)
    ca.solve(problem, method=method, max_iter=iterations, tol=1e-9)
    peak = _status("VmHWM") - base
    return {"head": head, "activation": activation, "n": n, "method": method, "dtype": dtype,
            "planned_method": chosen.method, "plan_bytes": chosen.peak_bytes,
            "peak_bytes": peak}


if __name__ == "__main__":
    import warnings

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # a 3-iteration solve does not converge; that is the point
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
