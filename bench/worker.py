"""The child process of :func:`bench.common.run_isolated`.

``python -m bench.worker MODULE:FUNCTION SPEC.json OUT.json`` reads the spec, caps the address
space when the spec has ``memory_limit_bytes``, sets torch's and the BLAS pools' threads to
``threads``, calls
``FUNCTION(spec, marks)`` and writes ``{"ok", "result", "error", "out_of_memory", "rss_kib"}``
to OUT.json. ``marks.mark(name)`` records ru_maxrss (KiB) at that point: the measured functions
mark "baseline" after their data is built (and after any warm-up) and "solved" after the
measured work; the "baseline" mark creates OUT.json.started, which starts the parent's clock.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import traceback


class Marks:
    """Named readings of ru_maxrss (KiB), the peak resident set size so far. The "baseline" mark
    also creates the file ``started`` (the parent's time limit runs from then on);
    :meth:`partial` saves a result so far, which the parent reads if the process dies later."""

    def __init__(self, started: str | None = None, partial: str | None = None):
        self.values: dict[str, int] = {}
        self.started = started
        self.partial_path = partial

    def partial(self, result: dict) -> None:
        from cvxattn.report import write_json

        if self.partial_path:
            write_json(self.partial_path, {"result": result, "rss_kib": self.values})

    def mark(self, name: str) -> int:
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.values[name] = value
        if name == "baseline" and self.started:
            open(self.started, "w").close()
        return value


def main(argv: list[str]) -> int:
    target, spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    limit = spec.get("memory_limit_bytes")
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch  # after the limit: the heavy imports count against it
    from threadpoolctl import threadpool_limits

    from cvxattn.report import write_json

    torch.set_num_threads(int(spec["threads"]))
    marks = Marks(out_path + ".started", out_path + ".partial")
    marks.mark("start")
    report = {"ok": False, "result": None, "error": None, "out_of_memory": False}
    try:
        module, name = target.split(":")
        function = getattr(importlib.import_module(module), name)
        with threadpool_limits(limits=int(spec["threads"])):  # BLAS pools as many as torch
            report["result"] = function(spec, marks)
        report["ok"] = True
    except MemoryError as error:
        report.update(error=f"MemoryError: {error}", out_of_memory=True)
    except Exception as error:  # recorded, not raised: the parent decides what it means
        text = f"{type(error).__name__}: {error}"
        # cvxattn's MemoryBudgetError: the solve refused a request larger than its budget
        report.update(error=text[:2000], out_of_memory="can't allocate memory" in text
                      or "out of memory" in text.lower()
                      or type(error).__name__ == "MemoryBudgetError")
        traceback.print_exc()
    marks.mark("end")
    report["rss_kib"] = marks.values
    write_json(out_path, report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
