"""Memory planning: estimate a solve's peak before allocating, choose a method and chunk size.

Each head has a per-sample cost model (:meth:`cvxattn.heads.Head.cost`); this module adds the
solver's own storage and compares the total with a budget, by default 60% of the memory
available now (:func:`available_memory`: on the CPU the least of the system's, the control
group's and the address-space limit's; free device memory on CUDA). A request that cannot fit
fails here with :class:`MemoryBudgetError`, before any large allocation, instead of being killed
by the operating system.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from numbers import Real

import torch

from ..heads.base import DESIGN_BUDGET
from ..problem import Problem

__all__ = ["MemoryBudgetError", "Plan", "plan", "available_memory", "budget_bytes",
           "DEFAULT_FRACTION"]

DEFAULT_FRACTION = 0.6  # of the memory available when the solve starts
SVD_PROBE_LIMIT = 1e9  # G·p·q·min(p, q): beyond it the dense SVDs are not even probed
DENSE_FAST = 1e-2  # seconds: a dense iteration this quick is kept whatever the model says
#                    (per-iteration overheads, which the model leaves out, dominate there)
FACTORIZED_MARGIN = 2.0  # auto leaves the dense blocks only when their SVDs alone cost this
#                          many factorized iterations (the factorized solver needs more
#                          iterations; the dense certificate is exact; and the choice should
#                          not flip with timing noise)
PLANNED_HEADS = 16  # heads per block the factorized plan reserves room for
KRYLOV_SHARE = 0.1  # of the budget for the Lanczos basis of the final certificate
CHUNK_BYTES = 2**30  # a network pass's intermediates per chunk: larger chunks are no faster
# What the libraries take on first use, whatever the size: BLAS and LAPACK workspaces and the
# allocator's free lists (20–30 MiB measured, tiny problems) ...
RUNTIME_BYTES = 32 * 2**20
# ... and torch.optim's first optimizer, which imports torch._dynamo (84 MiB measured): L-BFGS
# in the hybrid and factorized solvers
OPTIMIZER_IMPORT_BYTES = 96 * 2**20


class MemoryBudgetError(MemoryError):
    """The estimated peak memory of a solve exceeds its budget."""


@dataclass(frozen=True)
class Plan:
    """How a problem will be solved: method, sample chunk, and the estimate behind it."""

    method: str  # "fista" | "hybrid" | "factorized" | "cvxpy"
    peak_bytes: int  # estimated peak of the solve
    budget_bytes: int
    chunk_size: int | None = None  # samples per network pass (factorized)
    cache: bool = True  # keep the lifted data of every chunk between passes
    krylov_steps: int = 2000  # most Lanczos steps the final certificate may store
    reason: str = ""  # why this method: requested, or auto's reason


def available_memory(device: torch.device | str | None = None) -> int:
    """Bytes available now: free device memory on CUDA; on the CPU the smallest of the
    system's ``MemAvailable`` (Linux; else the free physical pages), what the process's
    control group may still use (``memory.max`` − ``memory.current``, as in containers and
    batch schedulers) and what its address-space limit (``ulimit -v``) leaves."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    limits = [_system_available(), _cgroup_available(), _address_space_available()]
    return min(limit for limit in limits if limit is not None)


def _system_available() -> int:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))  # pragma: no cover


def _read_number(path: str) -> int | None:
    """The integer in a one-line file, or None (missing, unreadable, or "max")."""
    try:
        with open(path) as file:
            text = file.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_available(proc: str = "/proc/self/cgroup", mount: str = "/sys/fs/cgroup"
                      ) -> int | None:
    """Memory left under this process's control-group limit (cgroup v2 ``memory.max``, or
    v1 ``memory.limit_in_bytes``), or None when there is none to read. Inside a container the
    group's own directory is usually the mount's root, so that is tried too."""
    try:
        with open(proc) as file:
            lines = file.read().splitlines()
    except OSError:  # pragma: no cover - not Linux
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"
            places, files = [mount + path, mount], ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # v1: "N:memory:/path"
            places = [f"{mount}/memory{path}", f"{mount}/memory"]
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        for place in (place.rstrip("/") for place in places):
            limit = _read_number(f"{place}/{files[0]}")
            if limit is not None:
                return max(limit - (_read_number(f"{place}/{files[1]}") or 0), 0)
    return None


def _address_space_available() -> int | None:
    """What the soft address-space limit (RLIMIT_AS) leaves above the process's present
    virtual size, or None when it is unlimited."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    size = 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    size = int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return max(soft - size, 0)


def budget_bytes(memory_budget, device=None) -> int:
    """``memory_budget`` in bytes, checked; None: 60% of the memory available on ``device``."""
    if memory_budget is None:
        return int(DEFAULT_FRACTION * available_memory(device))
    if not isinstance(memory_budget, Real) or isinstance(memory_budget, bool) \
            or not math.isfinite(memory_budget) or memory_budget <= 0:
        raise ValueError(f"memory_budget: expected a number of bytes > 0 or None, got "
                         f"{memory_budget!r}")
    return int(memory_budget)


def _dense_or_not(problem: Problem, dense_peak: int, budget: int) -> tuple[bool, str]:
    """Whether ``auto`` solves on the dense blocks (whose peak is ``dense_peak``), and why."""
    p, q = problem.head.block_shape
    svd_flops = problem.head.n_blocks * p * q * min(p, q)
    if dense_peak > budget:
        return False, (f"auto: the dense blocks need about {_gib(dense_peak)}, over the "
                       f"budget of {_gib(budget)}")
    if svd_flops > SVD_PROBE_LIMIT:
        return False, (f"auto: one SVD of the {problem.head.n_blocks} blocks of {p} × {q} "
                       f"costs about {svd_flops:.2g} flops per iteration")
    from .timing import iteration_times

    times = iteration_times(problem, PLANNED_HEADS)
    # both solvers pass over the data every iteration; what only the dense blocks pay is their
    # SVDs, and the factorized solver needs more iterations (heads grow, Lanczos certificates)
    if times.dense > DENSE_FAST and times.svd_seconds > FACTORIZED_MARGIN * times.factorized:
        return False, f"auto: {times.describe()}"
    return True, f"auto: the dense blocks fit ({_gib(dense_peak)}); {times.describe()}"


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def fista_bytes(problem: Problem, hybrid: bool = False) -> int:
    """Estimated peak of FISTA: X, the lifted data (with the pooled design when it is built),
    then the larger of the lift's intermediates (one chunk of samples) and what the iterations
    hold: the map's intermediates and ~16 copies of the blocks (iterates, gradient, prox SVD,
    the certificate's gradient blocks and the dual extrapolation's history); ``hybrid``: 24
    more for L-BFGS's history or Newton's system (``method="hybrid"``)."""
    head, n, item = problem.head, problem.n, problem.X.element_size()
    cost = head.cost(1, problem.pooled)
    design = problem.pooled and 0 < n * cost.design * item <= DESIGN_BUDGET
    lifted = n * (problem.s * problem.d + cost.lift + (cost.design if design else 0))
    p, q = head.block_shape
    copies = 40 if hybrid else 16
    iterations = n * (8 * problem.c if design else 2 * cost.map) \
        + copies * head.n_blocks * p * q
    return item * (lifted + max(cost.lift_peak(n), iterations)) + runtime_bytes(hybrid)


def runtime_bytes(optimizer: bool) -> int:
    """What the libraries take on first use (RUNTIME_BYTES), and when the solve runs
    ``torch.optim``'s L-BFGS (``optimizer``), what its first use imports (counted even when
    an earlier solve imported it already, so that a plan does not depend on the process's
    history)."""
    return RUNTIME_BYTES + (OPTIMIZER_IMPORT_BYTES if optimizer else 0)


def factorized_bytes(problem: Problem, chunk_size: int, cache: bool, heads: int,
                     krylov_steps: int, history: int = 20) -> int:
    """Estimated peak of the factorized solver: X, the lifted data (all of it when cached, one
    chunk otherwise), one chunk's network pass, per-sample outputs and duals, the heads with
    L-BFGS's history, and the Lanczos basis; for float32 tokens, the larger of that and the
    float64 finish (chunks lifted and passed in float64, nothing cached)."""
    head, n, item = problem.head, problem.n, problem.X.element_size()
    cost = head.cost(heads, problem.pooled)
    p, q = head.block_shape
    G = head.n_blocks
    outputs = problem.c * (problem.s if not problem.pooled else 1)
    lift = cost.lift
    if problem.pooled and head.network_design and cost.design:  # the passes run on Φ
        lift += cost.design
        cost = type(cost)(**{**cost.__dict__, "network": 3 * G * heads + 2 * problem.c})
    data = n * (problem.s * problem.d + 8 * outputs) + (n if cache else chunk_size) * lift
    weights = G * heads * (p + q) * (2 * history + 8)
    krylov = 2 * G * (p + q) * krylov_steps
    lifting = head.cost(1, problem.pooled).lift_peak(chunk_size)  # one chunk's lift at a time
    peak = item * (data + max(chunk_size * cost.network, lifting) + weights + krylov)
    if item < 8:  # the float64 finish: tokens stay, each chunk is lifted and passed in float64
        tokens = n * (problem.s * problem.d + 8 * outputs)
        finish = chunk_size * (problem.s * problem.d + lift) \
            + max(chunk_size * cost.network, lifting)
        peak = max(peak, item * tokens + 8 * (finish + 8 * n * outputs + weights + krylov))
    return peak + runtime_bytes(True)


def plan(problem: Problem, method: str = "auto", memory_budget=None) -> Plan:
    """Choose how to solve ``problem`` within ``memory_budget`` bytes (default 60% of what is
    available); raise :class:`MemoryBudgetError` when no way fits.

    A pooled program that equals a smaller one (``Problem.collapsed``) is planned as that
    one, which is what :func:`cvxattn.solve` solves. ``"auto"`` takes the dense blocks
    (``"hybrid"``: FISTA, and Newton or L-BFGS at full rank) when their estimated peak fits and the time
    model (:mod:`cvxattn.solvers.timing`: the head's flops, a measured matrix product and one
    measured SVD of the blocks) estimates a dense iteration under 10 ms, or SVDs of the blocks
    cheaper than two factorized iterations (both pass over the data every iteration; the SVDs
    are what only the dense blocks pay, and the factorized solver needs more iterations: at
    the paper's size the linear FNO's collapse took 79.5 s on dense blocks and 350 s
    factorized); else the factorized solver with the largest chunk of samples that fits. Blocks whose SVD would cost over 10⁹ flops are not probed:
    factorized. Every method that fits is considered: plain FISTA when the hybrid's L-BFGS
    history does not fit, the dense blocks when the factorized solver does not. ``Plan.reason``
    says why.

    The estimates count the tokens, every lifted entry (masks, designs, spectra), one chunk of
    the lift's intermediates, the iterations' storage, and a constant for the libraries' own
    workspaces; tests/solvers/test_memory_peaks.py checks them against the peak resident memory
    measured in a fresh process, for every head.
    """
    budget = budget_bytes(memory_budget, problem.X.device)
    collapsed = problem.collapsed() if method in ("auto", "fista", "hybrid") else None
    if collapsed is not None:  # solve() solves the smaller program this one equals
        held = problem.X.numel() * problem.X.element_size()  # the full tokens stay
        if held >= budget:
            raise MemoryBudgetError(f"memory_budget: the tokens alone take {_gib(held)}, over "
                                    f"the budget of {_gib(budget)}")
        small = plan(collapsed[0], method, budget - held)
        return replace(small, peak_bytes=small.peak_bytes + held, budget_bytes=budget)
    head = problem.head
    p, q = head.block_shape
    if method == "cvxpy":
        # the dense map matrix (outputs × G·p·q) in float64, copied by CVXPY's canonicalization
        outputs = problem.n * problem.c * (problem.s if not problem.pooled else 1)
        peak = 3 * 8 * outputs * head.n_blocks * p * q
        if peak > budget:
            raise MemoryBudgetError(
                f"memory_budget: method='cvxpy' needs about {_gib(peak)} for the dense map "
                f"matrix, over the budget of {_gib(budget)}; use method='fista' or "
                "'factorized'")
        return Plan("cvxpy", peak, budget, reason="method='cvxpy' requested")
    if method in ("fista", "hybrid"):
        peak = fista_bytes(problem, hybrid=method == "hybrid")
        if peak > budget:
            raise MemoryBudgetError(
                f"memory_budget: method={method!r} needs about {_gib(peak)} (estimated), "
                f"over the budget of {_gib(budget)}; use method='factorized' (it works in "
                "chunks of samples and never forms the blocks) or raise memory_budget")
        return Plan(method, peak, budget, reason=f"method={method!r} requested")
    if method == "factorized":
        return _factorized_plan(problem, budget, f"method={method!r} requested")
    # auto: the dense blocks (FISTA with Newton or L-BFGS at full rank, else plain FISTA, whose
    # peak is smaller) when they fit and the time model prefers them, else factorized; and
    # whichever of the two fits when the other does not
    dense_method, dense_peak = "hybrid", fista_bytes(problem, hybrid=True)
    if dense_peak > budget and fista_bytes(problem) <= budget:
        dense_method, dense_peak = "fista", fista_bytes(problem)
    dense, reason = _dense_or_not(problem, dense_peak, budget)
    if dense:
        return Plan(dense_method, dense_peak, budget, reason=reason)
    try:
        return _factorized_plan(problem, budget, reason)
    except MemoryBudgetError:
        if dense_peak > budget:
            raise
        return Plan(dense_method, dense_peak, budget, reason=(
            f"auto: the dense blocks fit ({_gib(dense_peak)}) and the factorized solver does "
            f"not ({reason.removeprefix('auto: ')})"))


def _factorized_plan(problem: Problem, budget: int, reason: str) -> Plan:
    """The factorized solver with the largest chunk of samples whose peak fits ``budget``
    (lifted data cached if it fits), or MemoryBudgetError."""
    head = problem.head
    p, q = head.block_shape
    item = problem.X.element_size()
    krylov_steps = int(min(2000, KRYLOV_SHARE * max(budget - runtime_bytes(True), 0)
                           // (item * 2 * head.n_blocks * (p + q))))
    pass_bytes = item * problem.head.cost(PLANNED_HEADS, problem.pooled).network
    for cache in (True, False):
        def peak(chunk: int) -> int:
            return factorized_bytes(problem, chunk, cache, PLANNED_HEADS, krylov_steps)

        if krylov_steps < 10 or peak(1) > budget:
            continue
        # the estimate is piecewise linear in the chunk (the float64 finish may dominate):
        # start from the linear guess, then halve until the exact estimate fits
        fixed, per_sample = peak(0), max(peak(1) - peak(0), 1)
        chunk = int(min(problem.n, max(1, (budget - fixed) // per_sample),
                        max(1, CHUNK_BYTES // max(pass_bytes, 1))))
        while chunk > 1 and peak(chunk) > budget:
            chunk //= 2
        return Plan("factorized", peak(chunk), budget, chunk, cache, krylov_steps,
                    reason=reason)
    need = factorized_bytes(problem, 1, False, PLANNED_HEADS, 10)
    raise MemoryBudgetError(
        f"memory_budget: the smallest factorized solve of this problem needs about "
        f"{_gib(need)} (estimated: the tokens themselves, one sample's pass and the heads), over "
        f"the budget of {_gib(budget)}; raise memory_budget, use fewer samples, or float32")
