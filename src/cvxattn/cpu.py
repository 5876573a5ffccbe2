"""How many cores are free for this process: the command line's thread policy reads it.

torch's and ONNX Runtime's thread pools spin while they wait for their slowest thread, so a
pool of as many threads as cores stalls when another process takes one core: on 2 cores a
certified solve with 2 threads ran 3.2× slower with one competing process, with 1 thread 1.6×
(docs/performance.md, "Threads on a shared machine"). The command line therefore asks, before
each fit, how many cores the other processes leave free, and uses that many threads.

Nothing here changes process-wide state; :func:`free_cores` only reads ``/proc``.
"""

from __future__ import annotations

import os
import time

__all__ = ["usable_cores", "others_busy", "free_cores"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _machine_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat; None without it."""
    try:
        with open("/proc/stat") as file:
            fields = file.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _CLOCK_TICKS, sum(ticks) / _CLOCK_TICKS


def _own_busy() -> float | None:
    """CPU seconds (user + system) used by this process, all its threads, from /proc."""
    try:
        with open("/proc/self/stat") as file:
            text = file.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def others_busy(window: float = 0.25) -> float | None:
    """Cores' worth of CPU time that other processes used over the next ``window`` seconds
    (e.g. 1.0: one other process running flat out); None where /proc cannot tell.

    The machine's busy time from /proc/stat minus this process's own, in the same window
    (this process's idle pool threads that still spin count as its own)."""
    first, own_first = _machine_busy(), _own_busy()
    if first is None or own_first is None:
        return None
    time.sleep(window)
    last, own_last = _machine_busy(), _own_busy()
    elapsed_total = last[1] - first[1]
    if elapsed_total <= 0:
        return None
    cores = elapsed_total / max(window, 1e-9)  # the machine's cores, as /proc/stat counts them
    busy = (last[0] - first[0]) - (own_last - own_first)
    return max(0.0, busy / elapsed_total * cores)


def free_cores(window: float = 0.25) -> int:
    """Cores of :func:`usable_cores` not taken by other processes (at least 1): a core counts
    as taken when others used more than half of one over ``window`` seconds. All usable cores
    where /proc cannot tell."""
    usable = usable_cores()
    busy = others_busy(window)
    if busy is None:
        return usable
    return max(1, min(usable, usable - int(busy + 0.5)))
