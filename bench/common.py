"""What every suite shares: timing, peak memory in a child process, data, tables and JSON.

Peak memory. A measured computation runs in a fresh Python process (``python -m bench.worker``,
so nothing the parent allocated is counted) that marks ``resource.getrusage(RUSAGE_SELF)
.ru_maxrss`` (the peak resident set size so far, KiB on Linux) right after its imports and data
creation ("baseline") and again after the measured work ("solved"). The reported memory of the
work is the difference, floored at :data:`MEMORY_FLOOR_MIB` (allocator noise below that is not
a measurement); the absolute peak comes from ``os.wait4``'s rusage of the child, which is known
even when the child was killed. A child is killed at its time limit; with ``memory_limit`` its
address space is capped (``RLIMIT_AS``) so that running out of memory is a recorded failure, not
a machine-wide OOM kill.

Synthetic data (:func:`planted_data`): tokens X ~ N(0, 1) and labels drawn from the softmax of a
planted network, seeded.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvxattn.report import Column, environment as _environment, format_table, write_json

__all__ = ["PROGRAMS", "MEMORY_FLOOR_MIB", "environment", "write_results", "print_table",
           "ratio", "fmt_ratio", "median_seconds", "run_isolated", "memory_mib", "planted_data",
           "square_grid", "parse_programs", "make_head", "gate_count", "bfno_groups",
           "data_pass", "RealTokens", "real_tokens", "fit_exponent", "fill_defaults",
           "check_positive", "Column"]

ROOT = Path(__file__).resolve().parent.parent  # the repository: bench/ and src/ live here
HEADS = ("mlp", "attention", "mixer", "fno", "bfno")
ACTIVATIONS = ("linear", "gated")
PROGRAMS = tuple(f"{h}-{a}" for a in ACTIVATIONS for h in HEADS)  # the ten programs
# Gates of the gated heads at the paper's protocol (SPEC.md §6): m = 100 for the MLP, 5 else.
PAPER_GATES = {"mlp": 100, "attention": 5, "mixer": 5, "fno": 5, "bfno": 5}
MEMORY_FLOOR_MIB = 1.0
PACKAGES = ("cvxattn", "torch", "numpy", "scipy", "scikit-learn", "cvxpy", "scs", "clarabel")


# ---------------------------------------------------------------------- records and tables
def environment(command: str | None = None) -> dict[str, Any]:
    """Date, command line, Python, platform, package versions, CPUs, torch and BLAS threads,
    the load average (another process on the machine skews every timing), RAM."""
    from threadpoolctl import threadpool_info

    env = _environment(command, packages=PACKAGES)
    env.update(cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
               torch_interop_threads=torch.get_num_interop_threads(),
               blas_threads=[{k: pool.get(k) for k in ("internal_api", "version",
                                                         "num_threads", "filepath")}
                             for pool in threadpool_info()],
               load_average=list(os.getloadavg()),
               memory_gib=round(_physical_memory() / 2**30, 2))
    return env


def _physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def write_results(path: str | os.PathLike, suite: str, config: dict, rows: list[dict],
                  summary: dict | None = None) -> Path:
    """Write ``{"suite", "environment", "config", "rows", "summary"}`` as strict JSON,
    atomically. Every row carries its raw numbers and a ``"ratios"`` dict; the command line
    recorded is ``config["command"]`` when present."""
    return write_json(path, {"suite": suite, "environment": environment(config.get("command")),
                             "config": config, "rows": rows, "summary": summary or {}})


def print_table(title: str, rows: list[dict], columns: Sequence[Column], notes: str = ""
                ) -> str:
    """Print (and return) ``title``, the Markdown table of ``rows`` and ``notes``."""
    text = f"\n{title}\n\n{format_table(rows, columns)}\n" + (f"\n{notes}\n" if notes else "")
    print(text, flush=True)
    return text


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the ratio is not finite."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    value = numerator / denominator
    return value if math.isfinite(value) and value > 0 else None


def fmt_ratio(value: float | None) -> str:
    """'123×', '0.42×', or '—' for a ratio that was not measured."""
    if value is None:
        return "—"
    return f"{value:.3g}×"


def median_seconds(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls
    (GPU work is waited for: CUDA is synchronized before the clock stops)."""

    def call():
        fn()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    for _ in range(warmup):
        call()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def fit_exponent(sizes: Sequence[float], values: Sequence[float | None]) -> float | None:
    """b of the least-squares fit log value = a + b log size (None with < 2 valid points).

    >>> round(fit_exponent([1000, 2000, 4000], [1.0, 4.0, 16.0]), 6)
    2.0
    """
    pairs = [(math.log(s), math.log(v)) for s, v in zip(sizes, values)
             if v is not None and v > 0]
    if len({p[0] for p in pairs}) < 2:
        return None
    x, y = np.array(pairs).T
    return float(np.polyfit(x, y, 1)[0])


def fill_defaults(args, **values) -> None:
    """Set every option still None to its default: ``name=(with --quick, without)``."""
    for name, (quick, full) in values.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)


def check_positive(args, *names: str) -> None:
    """ValueError naming the option when one of ``names`` is not a finite number > 0."""
    for name in names:
        value = getattr(args, name)
        values = value if isinstance(value, list) else [value]
        if not values or not all(v is not None and math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"--{name.replace('_', '-')}: expected positive numbers, got "
                             f"{value!r}")


# --------------------------------------------------------------------------- child processes
def run_isolated(target: str, spec: dict, time_limit: float | None = None,
                 memory_limit_gib: float | None = None) -> dict:
    """Run ``target`` ("module:function") as ``function(spec, marks)`` in a fresh process.

    Returns ``{"ok", "failure", "error", "result", "partial", "rss_kib", "peak_rss_kib",
    "wall_seconds", "exit_code", "log_tail"}`` (``partial``: what the child saved with
    ``marks.partial`` before it finished or died). ``failure`` is None, ``"time limit"``
    (killed ``time_limit`` seconds after the child's "baseline" mark: the measured work ran too
    long),
    ``"time limit (setup)"`` (imports, data and warm-up took longer than ``time_limit``),
    ``"out of memory"`` (MemoryError or a failed allocation under ``memory_limit_gib``, or killed
    by SIGKILL/SIGABRT without our asking: the usual signs of an allocator failure), or
    ``"error"``.
    ``rss_kib``: the child's ru_maxrss at each mark (KiB); ``peak_rss_kib``: its final peak.
    """
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit: expected seconds > 0, got {time_limit!r}")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        spec_path, out_path, log_path = (Path(tmp) / n for n in ("spec.json", "out.json", "log"))
        payload = dict(spec, threads=spec.get("threads", torch.get_num_threads()),
                       memory_limit_bytes=None if memory_limit_gib is None
                       else int(memory_limit_gib * 2**30))
        spec_path.write_text(json.dumps(payload))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        command = [sys.executable, "-m", "bench.worker", target, str(spec_path), str(out_path)]
        start = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env=env)
        started_path = Path(str(out_path) + ".started")
        killed, started, reaped = None, None, False
        try:
            pause = 0.01
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # (0, 0, _) while running
                if pid:
                    reaped = True
                    break
                now = time.perf_counter()
                if started is None and started_path.exists():
                    started = now
                if time_limit is not None and now - (start if started is None else started) \
                        > time_limit:
                    killed = "setup" if started is None else "measured"
                    break
                time.sleep(pause)
                pause = min(2 * pause, 0.2)
        finally:
            if not reaped:  # over the limit, or interrupted: never leave the child running
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        log_tail = log_path.read_text(errors="replace")[-2000:]
        report = json.loads(out_path.read_text()) if out_path.exists() else {}
        partial_path = Path(str(out_path) + ".partial")
        partial = json.loads(partial_path.read_text()) if partial_path.exists() else {}
    ok = bool(report.get("ok")) and code == 0 and not killed
    if ok:
        failure = None
    elif killed == "measured":
        failure = "time limit"
    elif killed:
        failure = "time limit (setup)"
    elif report.get("out_of_memory") or code in (-signal.SIGKILL, -signal.SIGABRT) \
            or "memory allocation" in log_tail:
        failure = "out of memory"
    else:
        failure = "error"
    error = report.get("error")
    if failure and not error:
        last = (log_tail.strip().splitlines() or [""])[-1]
        error = (f"killed after {time_limit:g} s of {killed} work" if killed
                 else f"exit code {code}: {last}")
    return {"ok": ok, "failure": failure, "error": error, "result": report.get("result"),
            "partial": partial.get("result"),
            "rss_kib": report.get("rss_kib") or partial.get("rss_kib", {}),
            "peak_rss_kib": usage.ru_maxrss,
            "wall_seconds": wall, "exit_code": code, "log_tail": None if ok else log_tail}


def memory_mib(outcome: dict, until: str = "solved") -> dict[str, float | None]:
    """Memory of a child's work: ``delta`` = ru_maxrss at ``until`` − at "baseline" (MiB,
    floored at :data:`MEMORY_FLOOR_MIB`), the ``baseline`` itself and the absolute ``peak``."""
    marks = outcome.get("rss_kib") or {}
    base, top = marks.get("baseline"), marks.get(until)
    delta = None if base is None or top is None else max((top - base) / 1024, MEMORY_FLOOR_MIB)
    return {"delta": delta, "baseline": None if base is None else base / 1024,
            "peak": outcome["peak_rss_kib"] / 1024}


# -------------------------------------------------------------------------------- data
def planted_data(n: int, s: int, d: int, c: int, heads: int = 4, activation: str = "gated",
                 snr: float = 3.0, seed: int = 0, dtype=np.float32
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Tokens X (n, s, d) ~ N(0, 1) and labels y (n,) from a planted network, seeded.

    The planted network has k = ``heads`` token-wise heads: hidden h_t = X_t W (k,) with
    W (d, k) ~ N(0, 1/d), times the gate 1{X_t H ≥ 0} (H (d, k) ~ N(0, 1)) when
    ``activation="gated"``; logits (1/s) Σ_t h_t V with V (k, c) ~ N(0, 1), standardized to
    standard deviation ``snr``. Labels y_i = argmax(logits_i + Gumbel noise), i.e. drawn from
    softmax(logits_i) (the Gumbel-max trick). Every class must occur (with an intercept a class
    without samples has no optimum): each missing class takes one random sample of the largest
    class, which changes at most c labels.

    >>> X, y = planted_data(50, 6, 4, 5, seed=1)
    >>> X.shape, y.shape, sorted(set(y.tolist())) == list(range(5))
    ((50, 6, 4), (50,), True)
    """
    for name, value in (("n", n), ("s", s), ("d", d), ("c", c), ("heads", heads)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if n < c:
        raise ValueError(f"n: expected at least c = {c} samples (every class must occur), "
                         f"got {n}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, s, d), dtype=np.float32).astype(dtype, copy=False)  # (n, s, d)
    W = (rng.standard_normal((d, heads)) / math.sqrt(d)).astype(dtype)  # (d, k)
    V = rng.standard_normal((heads, c))  # (k, c)
    hidden = X @ W  # (n, s, k)
    if activation == "gated":
        gate = rng.standard_normal((d, heads)).astype(dtype)  # (d, k)
        hidden *= (X @ gate >= 0)
    logits = hidden.mean(1, dtype=np.float64) @ V  # (n, c)
    logits *= snr / max(float(logits.std()), 1e-300)
    y = (logits + rng.gumbel(size=logits.shape)).argmax(1)  # (n,)
    counts = np.bincount(y, minlength=c)
    for k in np.flatnonzero(counts == 0):
        largest = int(counts.argmax())
        i = rng.choice(np.flatnonzero(y == largest))
        y[i] = k
        counts[largest] -= 1
        counts[k] += 1
    return X, y.astype(np.int64)


def square_grid(s: int) -> tuple[int, int]:
    """The most square h×w grid with h·w = s, h ≤ w (7×7 for 49, 2×3 for 6)."""
    h = max(f for f in range(1, math.isqrt(s) + 1) if s % f == 0)
    return h, s // h


@dataclass(frozen=True)
class RealTokens:
    """Real tokens split into train and test, with their grid and where they came from."""

    X_train: np.ndarray  # (n_train, s, d)
    y_train: np.ndarray  # (n_train,)
    X_test: np.ndarray  # (n_test, s, d)
    y_test: np.ndarray  # (n_test,)
    grid: tuple[int, int]
    source: str


def real_tokens(features: str | None = None, n_train: int | None = None,
                n_test: int | None = None, seed: int = 0) -> RealTokens:
    """scikit-learn's digits as 16 tokens of 4 features (:mod:`cvxattn.digits`), or the cached
    token set in ``features`` (:func:`cvxattn.features.load`), split 75/25 stratified and
    seeded; ``n_train``/``n_test`` take stratified subsets. Labels are made contiguous."""
    from cvxattn.digits import GRID, load_digits_tokens, split_digits

    if features is None:
        X, y = load_digits_tokens()  # (1797, 16, 4), (1797,)
        grid, source = GRID, "digits (sklearn.datasets.load_digits, 2×2 patches)"
    else:
        from cvxattn.features import load

        tokens = load(features)
        X, y, grid = tokens.X, tokens.y, tokens.grid
        request = tokens.manifest.get("request", {})
        source = (f"{request.get('dataset', {}).get('name')} tokens of "
                  f"{request.get('backbone', {}).get('name')} ({features})")
    y = np.unique(y, return_inverse=True)[1].astype(np.int64)
    train, test = split_digits(y, 0.25, seed, n_train, n_test)
    return RealTokens(X[train], y[train], X[test], y[test], tuple(grid), source)


# --------------------------------------------------------------------------------- heads
def parse_programs(names: Sequence[str] | None, default: Sequence[str] = PROGRAMS
                   ) -> list[tuple[str, str]]:
    """Program names → (head, activation) pairs: "mlp-gated" is one program, "mlp" both of
    its activations, "all" the ten.

    >>> parse_programs(["attention", "mlp-linear"])
    [('attention', 'linear'), ('attention', 'gated'), ('mlp', 'linear')]
    """
    out: list[tuple[str, str]] = []
    for name in (names or default):
        for part in str(name).split(","):
            if part == "all":
                picked = [tuple(p.split("-")) for p in PROGRAMS]
            elif part in HEADS:
                picked = [(part, a) for a in ACTIVATIONS]
            elif part in PROGRAMS:
                picked = [tuple(part.split("-"))]
            else:
                raise ValueError(f"--heads: expected names from {HEADS}, {PROGRAMS} or 'all', "
                                 f"got {part!r}")
            out += [p for p in picked if p not in out]
    return out


def gate_count(head: str, gates: int | None) -> int:
    """m for a gated head: ``gates`` when given, else the paper's (100 for the MLP, 5 else)."""
    return PAPER_GATES[head] if gates is None else int(gates)


def bfno_groups(d: int, c: int, preferred: int = 5) -> int:
    """B for the B-FNO: ``preferred`` if it divides d and c, else the largest that does."""
    for B in range(preferred, 0, -1):
        if d % B == 0 and c % B == 0:
            return B
    return 1  # pragma: no cover - B = 1 always divides


def make_head(head: str, activation: str, grid: tuple[int, int], gates: int | None = None,
              groups: int | None = None, seed: int = 0):
    """``cvxattn.heads.create`` with this suite's conventions (see :func:`gate_count`)."""
    from cvxattn.heads import create

    n_gates = gate_count(head, gates) if activation == "gated" else None
    return create(head, activation, n_gates=n_gates, seed=seed, grid=tuple(grid),
                  groups=groups)


def data_pass(head, W1: torch.Tensor, W2: torch.Tensor, b: torch.Tensor, data: dict,
              y: torch.Tensor) -> Callable[[], tuple]:
    """One full-batch data pass of the network: mean cross-entropy of its pooled logits and the
    gradients in (W1, W2, b), on lifted data (``head.lift(X, design=False)``, computed once by
    the caller, as a solver does). Returns a function that runs the pass."""
    W1, W2, b = (t.detach().clone().requires_grad_(True) for t in (W1, W2, b))

    def run():
        logits = head.network_outputs(W1, W2, data, True) + b  # (n, c)
        loss = torch.nn.functional.cross_entropy(logits, y)
        return torch.autograd.grad(loss, (W1, W2, b))

    return run


def max_rss_kib() -> int:
    """This process's peak resident set size so far (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
