"""Result tables: rows of plain dicts → an aligned Markdown table, and atomic JSON/Markdown files.

A results table is a list of row dicts (one per fitted model) and a list of :class:`Column` s
saying which keys to show, under which title and in which format. The same rows are written
unformatted to JSON, so nothing printed is lost; a missing value (``None``, or a key the row
lacks) prints as ``—``, never as a made-up number.

>>> rows = [{"head": "mlp", "acc": 0.5, "gap": 3.2e-07}, {"head": "attention", "acc": 0.75}]
>>> print(format_table(rows, [Column("head"), Column("acc", "test acc", ".3f"),
...                           Column("gap", fmt=".1e")]))
| head      | test acc |     gap |
| :-------- | -------: | ------: |
| mlp       |    0.500 | 3.2e-07 |
| attention |    0.750 |       — |
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import platform
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .files import write_atomic

__all__ = ["Column", "format_table", "write_atomic", "write_json", "environment",
           "to_jsonable", "plot_accuracy", "plot_gaps", "MISSING"]

MISSING = "—"  # how a value that was not computed prints


@dataclass(frozen=True)
class Column:
    """One column of a table: the row key, its title (default: the key) and its format.

    ``fmt`` is a format spec for :func:`format` (``".4f"``, ``".1e"``, ``"d"``) or a callable
    value → str; ``align`` is ``"left"`` or ``"right"`` (default: right when every shown value
    is a number, left otherwise).
    """

    key: str
    title: str | None = None
    fmt: str | Callable[[Any], str] | None = None
    align: str | None = None

    def __post_init__(self):
        if self.align not in (None, "left", "right"):
            raise ValueError(f"align: expected 'left', 'right' or None, got {self.align!r}")

    @property
    def heading(self) -> str:
        return self.key if self.title is None else self.title

    def render(self, value: Any) -> str:
        if value is None:
            return MISSING
        if callable(self.fmt):
            return str(self.fmt(value))
        if self.fmt is not None and _is_number(value):
            return format(value, self.fmt)
        return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _escape(cell: str) -> str:
    return cell.replace("|", r"\|").replace("\n", " ")


def format_table(rows: Sequence[Mapping[str, Any]],
                 columns: Sequence[Column | str] | None = None) -> str:
    """A Markdown table of ``rows`` with every column padded to one width.

    ``columns``: :class:`Column` s or plain keys; default, every key of the rows in order of
    first appearance. Numbers are right-aligned (``---:``), text left-aligned (``:---``).
    """
    if columns is None:
        keys: dict[str, None] = {}
        for row in rows:
            keys.update(dict.fromkeys(row))
        columns = list(keys)
    cols = [c if isinstance(c, Column) else Column(str(c)) for c in columns]
    if not cols:
        raise ValueError("columns: expected at least one column, got none")
    cells = [[_escape(col.render(row.get(col.key))) for col in cols] for row in rows]
    right = []
    for j, col in enumerate(cols):
        if col.align is not None:
            right.append(col.align == "right")
            continue
        shown = [row.get(col.key) for row in rows if row.get(col.key) is not None]
        right.append(bool(shown) and all(_is_number(v) for v in shown))
    headings = [_escape(col.heading) for col in cols]
    widths = [max([len(headings[j]), 3] + [len(r[j]) for r in cells]) for j in range(len(cols))]

    def line(parts: list[str]) -> str:
        padded = [p.rjust(w) if r else p.ljust(w) for p, w, r in zip(parts, widths, right)]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if r else (":" + "-" * (w - 1))
                             for w, r in zip(widths, right)) + " |"
    return "\n".join([line(headings), rule] + [line(r) for r in cells])


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: tuples → lists, paths → str, NaN/±inf → "nan"/"inf"/"-inf"
    (strict JSON has no such numbers), other objects → str."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict, indented JSON, atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False, ensure_ascii=False)
    return write_atomic(path, text + "\n")


def environment(command: str | None = None,
                packages: Sequence[str] = ("cvxattn", "torch", "numpy", "scikit-learn"),
                run: bool = True) -> dict[str, Any]:
    """What produced a result: UTC date, command line (default: ``sys.argv``), Python,
    platform and package versions. ``run=False`` leaves out the date and the command line,
    for files that must be the same bytes whenever the same inputs are saved (models, token
    caches)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    moment = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "command": command if command is not None else shlex.join(sys.argv)} if run else {}
    return {**moment, "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions}


# ------------------------------------------------------------------------------ figures
def _figure_bytes(figure) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def _figure(width: float, height: float):
    """A figure of matplotlib's object API: no pyplot, so the user's backend and pyplot's
    global state are left alone."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def plot_accuracy(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                  title: str = "test accuracy") -> Path:
    """Horizontal bars of every row's test accuracy (%), labelled "head activation (fitted
    by)", best on top, with ± its ``test_acc_std`` where rows have one; written atomically as
    PNG."""
    shown = sorted((r for r in rows if r.get("test_acc") is not None),
                   key=lambda r: r["test_acc"])
    labels = [" ".join(str(r[k]) for k in ("head", "activation") if r.get(k))
              + f" ({r.get('fitted_by', '')})" for r in shown]
    colors = {"cvxattn": "tab:blue", "AdamW": "tab:orange", "scikit-learn": "tab:green"}
    figure = _figure(7, 0.3 * len(shown) + 1.2)
    ax = figure.subplots()
    values = [100 * r["test_acc"] for r in shown]
    spread = [100 * (r.get("test_acc_std") or 0.0) for r in shown]
    ax.barh(range(len(shown)), values, xerr=spread if any(spread) else None, capsize=2,
            color=[colors.get(r.get("fitted_by"), "tab:gray") for r in shown])
    for k, (v, e) in enumerate(zip(values, spread)):
        ax.text(v + e, k, f" {v:.1f}" + (f" ± {e:.1f}" if e else ""), va="center", fontsize=8)
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    low = min(values, default=0.0)
    ax.set_xlim(max(0.0, low - 10), 100)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title)
    return write_atomic(path, _figure_bytes(figure))


def plot_gaps(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike,
              title: str = "certified relative duality gap of each final solve") -> Path:
    """The relative duality gap (log scale) against seconds of every row with a ``history``
    of (seconds, gap) pairs; written atomically as PNG."""
    figure = _figure(7, 4.5)
    ax = figure.subplots()
    for r in rows:
        history = [(t, g) for t, g in (r.get("history") or []) if g > 0 and math.isfinite(g)]
        if history:
            t, g = zip(*history)
            ax.plot(t, g, marker=".", markersize=3, linewidth=1,
                    label=f"{r['head']} {r.get('activation') or ''}".strip())
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("(P − D) / |P|")
    ax.set_title(title)
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    return write_atomic(path, _figure_bytes(figure))
