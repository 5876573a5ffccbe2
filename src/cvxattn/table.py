"""The paper's comparison (SPEC.md §6) on cached backbone tokens: ``cvxattn table``.

Data. Two token caches written by ``cvxattn features`` (train and test, same backbone, grid,
d and classes). Features are standardized with the training tokens' mean and standard
deviation (per feature, over samples and tokens), as for any regularized linear model. A
stratified validation split (``val_fraction`` of the training set, seeded) is carved out
for every choice made on validation.

Rows.
- Every requested convex head (SPEC.md §2), fitted by :func:`cvxattn.protocol.fit_convex`:
  β picked on validation along a warm-started path, refitted on the whole training set and
  certified to a relative duality gap ≤ ``tol``.
- ``logistic-mean``: scikit-learn's LogisticRegression on the mean token (d features): the
  paper's linear head; ``logistic-tokens``: on the flattened tokens (s·d features). C picked
  on validation from :data:`LOGISTIC_C` (widened while the pick is on its edge), refitted on
  the whole training set.
- ``probe-full``: the same on all the backbone's channels (1280 for EfficientNet-Lite0)
  averaged over the tokens before pooling to d: the linear probe quoted for a backbone.
- ``mlp``: a token-wise ReLU MLP (width = the MLP's gates, 100 by default), ``attention``:
  softmax multi-head self-attention (heads = the attention's gates, 5 by default), each
  mean-pooled, and ``attentive``: the attentive probe (a few learnable queries cross-attending
  over the tokens, then a linear classifier), each trained by AdamW on the fit part with the
  epoch of best validation accuracy kept (early stopping), the learning rate and the
  decoupled weight decay picked on validation from ``lr`` × ``adamw_decay``.
- ``networks``: each convex head's own network, as many heads per block as the largest block
  rank of its certified solution, trained from random initialization by AdamW on exactly the
  convex program's objective (mean loss + β · weight decay at the chosen β, on the whole
  training set), with the learning rate of ``lr`` that reaches the lowest objective. Its
  objective is never below the certified optimum; the ``excess`` column is (objective −
  P)/|P| against the convex row's P.

Every hyperparameter is picked on validation over a grid that is widened while the pick lies
on its edge (β along the path, C, learning rate, weight decay); a pick still on an edge is
named in the ``edge`` column.

Output: the table (Markdown, CSV and JSON with every row, the command, versions and date) and
two figures: test accuracy by model, and the relative duality gap against time of every final
convex solve.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .baselines import (AttentiveProbe, MLPHead, SoftmaxAttentionHead,
                        accuracy as network_accuracy, train_adamw)
from .features import TokenSet
from .checks import check_integer
from .files import check_folder
from . import heads
from .heads import REGISTRY, create
from .protocol import (checked_betas, checked_gates, checked_names, choose_on_grid,
                       fit_convex, is_count, is_positive, stratified_subset)
from .report import Column, write_atomic

__all__ = ["ProtocolConfig", "TableConfig", "TableData", "prepare", "iter_rows",
           "table_columns", "summarize", "summary_columns", "write_csv", "DEFAULT_GATES",
           "BASELINES", "LOGISTIC_C"]

ACTIVATIONS = ("linear", "gated")
# The heads' own defaults (SPEC.md §6: m = 100 gates for the MLP, 5 heads for self-attention,
# B = 5 for the B-FNO, 5 for the other attention-type heads), but the gated Mixer's design has
# s²·d columns per gate (24,010 at 49 tokens of d = 10) and FISTA needs many passes through it:
# it gets 1 gate so that the main job ends within 15 minutes on 2 cores (--n-gates mixer=5;
# with 2 gates on PCA tokens its final solve alone took 202 s, 2026-12-06).
DEFAULT_GATES = {**heads.DEFAULT_GATES, "mixer": 1}
BASELINES = ("logistic-mean", "logistic-tokens", "probe-full", "mlp", "attention", "attentive",
             "networks")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# C = 1 / (n · regularization), picked on validation, the grid widened on its edges
LOGISTIC_C = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)
# β, four decades at half-decade steps: the path stops after PATIENCE values without a better
# validation accuracy, and is widened (√10 steps) while its best β is on an edge
BETAS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
PATIENCE = 2
EXTENSIONS = 2  # most values added beyond any grid's edge
ATTENTIVE_QUERIES = 4  # the attentive probe's learnable queries
METHODS = ("auto", "fista", "hybrid", "factorized")


def _meta(text: str, **kw) -> dict:
    """Field metadata: the --help text of the option derived from the field (cli.py)."""
    return {"help": text, **kw}


@dataclass(frozen=True, kw_only=True)
class ProtocolConfig:
    """How the heads and baselines are fitted; shared by ``cvxattn table``, ``run`` and
    ``digits``."""

    GATE_DEFAULTS = DEFAULT_GATES  # what --n-gates HEAD=M pairs are merged over

    heads: tuple[str, ...] = field(default=tuple(REGISTRY), metadata=_meta(
        "convex heads to fit, or none (the baselines only)", choices=tuple(REGISTRY) + ("none",),
        metavar="HEAD"))
    activations: tuple[str, ...] = field(default=ACTIVATIONS, metadata=_meta(
        "activations to fit for each head", choices=ACTIVATIONS, metavar="ACTIVATION"))
    beta: tuple[float, ...] = field(default=BETAS, metadata=_meta(
        "candidate β (weight of the block nuclear norm; the loss is a mean over samples). "
        "Each head picks its own on the validation split along a warm-started path (stopped "
        "after --patience values without a better accuracy, widened while its pick is on an "
        "edge), then is refitted on the whole training set. One value: no selection",
        metavar="BETA"))
    patience: int = field(default=PATIENCE, metadata=_meta(
        "stop a β path after this many values without a better validation accuracy",
        metavar="N"))
    tol: float = field(default=1e-3, metadata=_meta(
        "certify every final fit to this relative duality gap (P − D)/|P|"))
    select_tol: float = field(default=1e-2, metadata=_meta(
        "relative duality gap of the path solves that pick β", metavar="TOL"))
    max_iter: int = field(default=10_000, metadata=_meta(
        "solver iteration limit per solve; a fit that stops before --tol is reported with "
        "its status and its actual gap (on the main job the gated MLP took 3,810 FISTA "
        "iterations to a gap of 1e-3 at β = 3e-5, and more than 5,000 at 1e-4)", metavar="N"))
    method: str = field(default="auto", metadata=_meta(
        "solver: auto (by size and memory), fista, hybrid or factorized", choices=METHODS))
    dtype: str = field(default="float64", metadata=_meta(
        "arithmetic of the convex solves: float32 halves their time and memory (enough for a "
        "--tol of 1e-5 or more), float64 for tighter certificates", choices=tuple(DTYPES)))
    n_gates: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_GATES),
                                       metadata=_meta(
        "gates m of the gated heads (per group for bfno), as HEAD=M pairs; heads not named "
        "keep their default", metavar="HEAD=M"))
    bfno_groups: int = field(default=5, metadata=_meta(
        "groups B of the block FNO (must divide d and the number of classes)", metavar="B"))
    baselines: tuple[str, ...] = field(default=BASELINES, metadata=_meta(
        "baselines: logistic-mean and logistic-tokens (scikit-learn on the mean token and on "
        "the flattened tokens), probe-full (on all the backbone's channels, token mean), mlp, "
        "attention (softmax multi-head) and attentive (the "
        "attentive probe) trained by AdamW, networks (each convex head's own network trained "
        "by AdamW on the same objective), or none", choices=BASELINES + ("none",),
        metavar="BASELINE"))
    epochs: int = field(default=50, metadata=_meta("AdamW epochs", metavar="N"))
    lr: tuple[float, ...] = field(default=(1e-3, 1e-2), metadata=_meta(
        "AdamW learning rates (cosine decay), picked on validation", metavar="LR"))
    adamw_decay: tuple[float, ...] = field(default=(1e-4, 1e-2, 1.0), metadata=_meta(
        "AdamW decoupled weight decays of the mlp, attention and attentive baselines, picked "
        "on validation", metavar="DECAY"))
    val_fraction: float = field(default=0.2, metadata=_meta(
        "fraction of the training set held out to pick β, C and epochs", metavar="FRACTION"))
    standardize: bool = field(default=True, metadata=_meta(
        "standardize every feature with the training tokens' mean and deviation"))
    seed: int = field(default=0, metadata=_meta(
        "seed of the validation split, the gates and the AdamW runs (and of the image subsets "
        "for run)"))
    seeds: int = field(default=1, metadata=_meta(
        "repeat the table over N seeds (seed, seed + 1, …), each drawing the splits, the gates "
        "and the initializations anew; the table shows mean ± standard deviation over them",
        metavar="N"))
    threads: int | None = field(default=None, metadata=_meta(
        "threads of torch, the BLAS and ONNX Runtime, set by the command line (library code "
        "never sets them); default: the cores other processes leave free, looked at again "
        "before each fit", metavar="N"))
    out: Path = field(default=Path("results"), metadata=_meta(
        "folder for table.md, table.csv, table.json, accuracy.png and gap.png (written "
        "atomically)", metavar="DIR"))

    def __post_init__(self):
        def fix(name, value):
            object.__setattr__(self, name, value)

        heads = checked_names("heads", self.heads, tuple(REGISTRY) + ("none",))
        if "none" in heads and len(heads) > 1:
            raise ValueError(f"heads: expected distinct names from {tuple(REGISTRY)}, or none "
                             f"alone, got {heads}")
        fix("heads", () if heads == ("none",) else heads)
        fix("activations", checked_names("activations", self.activations, ACTIVATIONS))
        baselines = checked_names("baselines", self.baselines, BASELINES + ("none",))
        if "none" in baselines and len(baselines) > 1:
            raise ValueError(f"baselines: expected distinct names from {BASELINES}, or none "
                             f"alone, got {baselines}")
        fix("baselines", baselines)
        if not self.heads and baselines == ("none",):
            raise ValueError("heads: expected a head or a baseline to fit, got none of either")
        fix("beta", checked_betas(self.beta))
        for name in ("tol", "select_tol", "val_fraction"):
            value = getattr(self, name)
            if not (is_positive(value) and value < 1):
                raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")
        for name in ("lr", "adamw_decay"):
            values = getattr(self, name)
            values = (values,) if isinstance(values, (int, float)) else tuple(values)
            if not values or not all(is_positive(v) for v in values) \
                    or len(set(values)) != len(values):
                raise ValueError(f"{name}: expected distinct finite numbers > 0, got "
                                 f"{getattr(self, name)!r}")
            fix(name, tuple(float(v) for v in values))
        for name in ("max_iter", "epochs", "bfno_groups", "patience", "seeds"):
            if not is_count(getattr(self, name)):
                raise ValueError(f"{name}: expected a positive integer, got "
                                 f"{getattr(self, name)!r}")
        if self.threads is not None and not is_count(self.threads):
            raise ValueError(f"threads: expected a positive integer, got {self.threads!r}")
        fix("out", check_folder(self.out, "out"))  # before the tokens are read or made
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {tuple(DTYPES)}, got {self.dtype!r}")
        for name in ("tol", "select_tol"):
            if self.dtype == "float32" and getattr(self, name) < 1e-5:
                raise ValueError(f"{name}: expected at least 1e-5 with dtype float32 (its "
                                 f"rounding would swamp the gap), got {getattr(self, name)!r}")
        fix("n_gates", checked_gates(self.n_gates, self.GATE_DEFAULTS, tuple(REGISTRY)))
        check_integer(self.seed, "seed")

    @property
    def fitted_baselines(self) -> tuple[str, ...]:
        return () if self.baselines == ("none",) else self.baselines

    @property
    def seed_values(self) -> tuple[int, ...]:
        """The seeds of the repeated tables."""
        return tuple(range(self.seed, self.seed + self.seeds))


@dataclass(frozen=True, kw_only=True)
class TableConfig(ProtocolConfig):
    """What ``cvxattn table`` compares; its options are derived from these fields."""

    train: Path = field(metadata=_meta(
        "token cache of the training images (a folder written by `cvxattn features`)",
        metavar="DIR"))
    test: Path = field(metadata=_meta("token cache of the test images", metavar="DIR"))


@dataclass(frozen=True)
class TableData:
    """Standardized tokens of one comparison, with its validation split (a :class:`Split`)."""

    X_train: np.ndarray  # (n_train, s, d) float32
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    fit_mask: np.ndarray  # (n_train,) True: fit part, False: validation
    grid: tuple[int, int]
    classes: tuple[str, ...]
    mean: np.ndarray  # (d,) the standardization (0 and 1 when off)
    std: np.ndarray
    # (n, F): all F backbone features averaged over the tokens before pooling, standardized
    # with the training set's statistics (the standard linear probe's input); None without
    full_train: np.ndarray | None = None
    full_test: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def prepare(config: ProtocolConfig, train: TokenSet, test: TokenSet) -> TableData:
    """Check that the two caches match, standardize, carve the validation split."""
    if (train.s, train.d) != (test.s, test.d) or tuple(train.grid) != tuple(test.grid):
        raise ValueError(f"test: expected tokens like the training tokens ({train.s} tokens "
                         f"of {train.d} features on a {train.grid} grid), got {test.s} of "
                         f"{test.d} on {test.grid}")
    if tuple(train.classes) != tuple(test.classes):
        raise ValueError("test: expected the training set's classes, got other class names")
    c = len(train.classes)
    grouped = any("groups" in heads.parameters(name) for name in config.heads)
    if grouped and (train.d % config.bfno_groups or c % config.bfno_groups):
        raise ValueError(f"bfno_groups: expected B dividing d = {train.d} and the {c} classes, "
                         f"got {config.bfno_groups}")
    X_train = np.asarray(train.X, np.float32)
    X_test = np.asarray(test.X, np.float32)
    d = X_train.shape[2]
    if config.standardize:
        flat = X_train.reshape(-1, d).astype(np.float64)
        mean, std = flat.mean(0), flat.std(0)
        std[std == 0] = 1.0  # a constant feature stays constant (zero)
    else:
        mean, std = np.zeros(d), np.ones(d)
    X_train = ((X_train - mean) / std).astype(np.float32)
    X_test = ((X_test - mean) / std).astype(np.float32)
    index = np.arange(len(train.y))
    n_val = max(1, round(config.val_fraction * len(index)))
    val = stratified_subset(index, train.y, n_val, config.seed + 2)
    fit_mask = ~np.isin(index, val)
    for part, name in ((train.y[fit_mask], "fit"), (train.y[~fit_mask], "validation")):
        missing = sorted(set(range(c)) - set(np.unique(part).tolist()))
        if missing:
            raise ValueError(f"val_fraction: the {name} part of the {len(index)} training "
                             f"images lacks classes {missing}; expected every class in both "
                             "(use more training images or change val_fraction)")
    full_train = full_test = None
    if train.features_mean is not None and test.features_mean is not None:
        full_train = np.asarray(train.features_mean, np.float64)
        center, scale = full_train.mean(0), full_train.std(0)
        scale[scale == 0] = 1.0
        full_train = ((full_train - center) / scale).astype(np.float32)
        full_test = ((np.asarray(test.features_mean, np.float64) - center) / scale
                     ).astype(np.float32)
    return TableData(X_train, np.asarray(train.y), X_test, np.asarray(test.y), fit_mask,
                     tuple(train.grid), tuple(train.classes), mean, std, full_train, full_test)


# -------------------------------------------------------------------------------- rows
def _row(head: str, activation: str | None, fitted_by: str, **values) -> dict:
    """A table row with every column present (None where it does not apply)."""
    row = dict.fromkeys(["gates", "beta", "val_acc", "train_acc", "test_acc", "objective",
                         "lower_bound", "gap", "excess", "status", "heads", "parameters",
                         "iterations", "certificate", "method", "seconds", "select_seconds"])
    row.update(notes=[], edge=())
    row.update(head=head, activation=activation, fitted_by=fitted_by, **values)
    return {"head": row.pop("head"), "activation": row.pop("activation"),
            "fitted_by": row.pop("fitted_by"), **row}


LOGISTIC_FEATURES = {"logistic-mean": "mean token", "logistic-tokens": "tokens",
                     "probe-full": "all backbone channels"}


def fit_logistic(data: TableData, kind: str = "logistic-tokens", seed: int = 0) -> dict:
    """LogisticRegression on the mean token (``logistic-mean``: the paper's linear head), on
    the flattened tokens (``logistic-tokens``), or on all the backbone's channels averaged
    over the tokens (``probe-full``: the linear probe quoted for a backbone); C picked on
    validation (the grid widened on its edges), refitted on the whole training set."""
    from sklearn.linear_model import LogisticRegression

    if kind == "probe-full":
        if data.full_train is None:
            raise ValueError("baselines: probe-full needs token caches with the backbone's "
                             "full-width mean features (made by this version's extract)")
        train, test = data.full_train, data.full_test
    elif kind == "logistic-mean":
        train, test = data.X_train.mean(1), data.X_test.mean(1)
    else:
        train, test = (X.reshape(len(X), -1) for X in (data.X_train, data.X_test))
    start = time.perf_counter()
    fit, val = data.fit_mask, ~data.fit_mask

    def evaluate(C):
        model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
        model.fit(train[fit], data.y_train[fit])
        return model.score(train[val], data.y_train[val]), None

    choice = choose_on_grid({"C": LOGISTIC_C}, evaluate, extensions=EXTENSIONS,
                            prefer={"C": -1})  # ties: the smaller C (more regularization)
    select_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model = LogisticRegression(C=choice.values["C"], max_iter=2000, random_state=seed)
    model.fit(train, data.y_train)
    seconds = time.perf_counter() - start
    name = (f"linear probe ({train.shape[1]} channels)" if kind == "probe-full"
            else f"logistic ({LOGISTIC_FEATURES[kind]})")
    return _row(name, "linear", "scikit-learn",
                val_acc=choice.score, train_acc=float(model.score(train, data.y_train)),
                test_acc=float(model.score(test, data.y_test)),
                parameters=int(model.coef_.size + model.intercept_.size),
                iterations=int(np.max(model.n_iter_)), seconds=seconds,
                select_seconds=select_seconds, edge=choice.edge, notes=[choice.describe()])


def _tensors(data: TableData, mask: np.ndarray | None = None):
    X, y = data.X_train, data.y_train
    if mask is not None:
        X, y = X[mask], y[mask]
    return torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(y.astype(np.int64))


ADAMW_NAMES = {"mlp": "mlp (ReLU)", "attention": "attention (softmax)",
               "attentive": "attentive probe"}


def _adamw_model(config: ProtocolConfig, kind: str, d: int, c: int) -> torch.nn.Module:
    if kind == "mlp":
        return MLPHead(d, c, width=config.n_gates["mlp"], seed=config.seed, dtype=torch.float32)
    if kind == "attention":
        return SoftmaxAttentionHead(d, c, n_heads=config.n_gates["attention"], seed=config.seed,
                                    dtype=torch.float32)
    return AttentiveProbe(d, c, n_queries=ATTENTIVE_QUERIES, n_heads=config.n_gates["attention"],
                          seed=config.seed, dtype=torch.float32)


def fit_adamw_baseline(config: ProtocolConfig, data: TableData, kind: str) -> dict:
    """A head people train today (the ReLU MLP, softmax attention, the attentive probe):
    AdamW on the fit part, the epoch of best validation accuracy kept, the learning rate and
    the weight decay picked on validation (the grids widened on their edges)."""
    _, s, d = data.X_train.shape
    X_fit, y_fit = _tensors(data, data.fit_mask)
    validation = _tensors(data, ~data.fit_mask)
    start = time.perf_counter()

    def evaluate(lr, decay):
        model = _adamw_model(config, kind, d, data.n_classes)
        result = train_adamw(model, X_fit, y_fit, lr=lr, epochs=config.epochs,
                             weight_decay=decay, seed=config.seed, validation=validation)
        return result.val_acc, result

    choice = choose_on_grid({"lr": config.lr, "decay": config.adamw_decay}, evaluate,
                            extensions=EXTENSIONS, prefer={"lr": -1, "decay": 1})
    result = choice.result
    model = result.model
    X_test = torch.from_numpy(data.X_test)
    y_test = torch.from_numpy(data.y_test.astype(np.int64))
    return _row(ADAMW_NAMES[kind], None, "AdamW", val_acc=result.val_acc,
                train_acc=network_accuracy(model, X_fit, y_fit),
                test_acc=network_accuracy(model, X_test, y_test),
                parameters=sum(p.numel() for p in model.parameters()),
                iterations=result.best_epoch, seconds=result.seconds,
                select_seconds=time.perf_counter() - start - result.seconds,
                edge=choice.edge,
                notes=[f"{choice.describe()}; epoch {result.best_epoch} of {config.epochs} kept "
                       "(best validation accuracy); trained on the fit part only"])


def fit_network(config: ProtocolConfig, data: TableData, convex: dict, solution) -> dict:
    """A convex head's own network, trained by AdamW on the same objective at the same β."""
    head, beta = solution.head, convex["beta"]
    per_block = max(int(solution.ranks.max()), 1)
    X, y = _tensors(data)

    def evaluate(lr):  # the learning rate that reaches the lowest objective
        net = head.network(per_block, seed=config.seed).to(torch.float32)
        result = train_adamw(net, X, y, lr=lr, epochs=config.epochs, penalty=beta,
                             seed=config.seed)
        return -result.objective, result

    # not widened (each run trains on the whole training set: the budget of the main job);
    # a pick on the grid's edge is flagged
    choice = choose_on_grid({"lr": config.lr}, evaluate, extensions=0)
    result, net = choice.result, choice.result.model
    X_test = torch.from_numpy(data.X_test)
    y_test = torch.from_numpy(data.y_test.astype(np.int64))
    P = convex["objective"]
    return _row(convex["head"], convex["activation"], "AdamW", gates=convex["gates"],
                beta=beta, train_acc=network_accuracy(net, X, y),
                test_acc=network_accuracy(net, X_test, y_test), objective=result.objective,
                excess=(result.objective - P) / abs(P),
                heads=head.n_blocks * per_block,
                parameters=sum(p.numel() for p in net.parameters()),
                iterations=config.epochs, seconds=result.seconds,
                select_seconds=sum(r.seconds for _, r in choice.results) - result.seconds,
                edge=choice.edge,
                notes=[f"network: {per_block} heads per block (the largest block rank of the "
                       f"certified solution), same objective and β; lr = "
                       f"{choice.values['lr']:g}, the lowest objective of lr in "
                       f"{{{', '.join(f'{v:g}' for v in config.lr)}}}"
                       + (" (AT THE EDGE of its grid)" if choice.edge else "")])


def iter_rows(config: ProtocolConfig, data: TableData,
              progress: Callable[[str], None] | None = None,
              fitted: dict | None = None, callback=None) -> Iterator[dict]:
    """Fit every convex head (and its network), then the baselines; yield rows as they end.
    ``fitted``: a dict that receives {(head, activation): (row, solution)} of every convex
    head, for what comes after the table (the explanation gallery). ``callback``: passed to
    every convex solve (the command line looks at the free cores again through it)."""
    say = progress or (lambda message: None)
    jobs = [(h, a) for h in config.heads for a in config.activations]
    for k, (name, activation) in enumerate(jobs, 1):
        gated = activation == "gated"
        head = create(name, activation, config.n_gates[name], config.seed, data.grid,
                      config.bfno_groups)
        values, solution = fit_convex(head, data, config.beta, config.tol,
                                      config.select_tol, config.max_iter, config.method,
                                      n_classes=data.n_classes,
                                      dtype=DTYPES[config.dtype], patience=config.patience,
                                      extensions=EXTENSIONS, callback=callback)
        row = _row(name, activation, "cvxattn",
                   gates=config.n_gates[name] if gated else None, **values)
        if fitted is not None:
            fitted[name, activation] = (row, solution)
        say(f"[{k}/{len(jobs)}] {name} {activation}: β={row['beta']:g} test acc "
            f"{100 * row['test_acc']:.2f}%  gap {row['gap']:.1e} ({row['status']})  "
            f"{row['heads']} heads  {row['seconds']:.1f}s (+{row['select_seconds'] or 0:.1f}"
            "s picking β)")
        yield row
        if "networks" in config.fitted_baselines:
            net_row = fit_network(config, data, row, solution)
            say(f"      its network by AdamW: objective {net_row['objective']:.4f} "
                f"({100 * net_row['excess']:+.1f}% vs P), test acc "
                f"{100 * net_row['test_acc']:.2f}%  {net_row['seconds']:.1f}s")
            yield net_row
    for kind in LOGISTIC_FEATURES:
        if kind in config.fitted_baselines:
            row = fit_logistic(data, kind, config.seed)
            say(f"{row['head']}: test acc {100 * row['test_acc']:.2f}%  {row['seconds']:.1f}s")
            yield row
    for kind in ADAMW_NAMES:
        if kind in config.fitted_baselines:
            row = fit_adamw_baseline(config, data, kind)
            say(f"{row['head']} by AdamW: test acc {100 * row['test_acc']:.2f}%  "
                f"{row['seconds']:.1f}s")
            yield row


# ------------------------------------------------------------------------------- output
def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def table_columns() -> list[Column]:
    """The columns of the printed table (CSV and JSON keep every key of the rows)."""
    return [Column("head"), Column("activation"), Column("fitted_by", "fitted by"),
            Column("gates", "gates m", "d"), Column("beta", "β", "g"),
            Column("val_acc", "val acc %", _percent), Column("test_acc", "test acc %", _percent),
            Column("objective", "train objective", ".5f"), Column("gap", "rel. gap", ".1e"),
            Column("excess", "vs P", lambda v: f"{100 * v:+.1f}%"), Column("status"),
            Column("heads", "heads (rank)", "d"), Column("parameters", "params", "d"),
            Column("seconds", "fit s", ".1f"), Column("select_seconds", "select s", ".1f"),
            Column("edge", "at edge", lambda v: ", ".join(v) if v else "—")]


MODEL_KEYS = ("head", "activation", "fitted_by", "gates")  # what names a row's model
_MEANS = ("train_acc", "objective", "excess", "heads", "parameters", "iterations", "seconds",
          "select_seconds")


def summarize(rows: list[dict]) -> list[dict]:
    """One row per model (:data:`MODEL_KEYS`) over the seeds of ``rows`` (each with its
    ``seed``), in order of first appearance: ``seeds``, the β of each seed (``betas``),
    ``val_acc`` and ``test_acc`` as means with their sample standard deviations
    (``val_acc_std``, ``test_acc_std``; 0 for one seed; both as ``*_pm`` pairs), the worst
    ``gap`` and every ``status``, the mean of :data:`_MEANS`, and the hyperparameters at an
    edge for any seed."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in MODEL_KEYS), []).append(row)
    summary = []
    for key, group in groups.items():
        out = dict(zip(MODEL_KEYS, key))
        out.update(seeds=[r.get("seed") for r in group],
                   betas=[r.get("beta") for r in group] if group[0].get("beta") is not None
                   else None)

        def present(name):
            return [r[name] for r in group if r.get(name) is not None]

        for name in _MEANS + ("val_acc", "test_acc"):
            values = present(name)
            out[name] = float(np.mean(values)) if values else None
        for name in ("val_acc", "test_acc"):
            values = present(name)
            out[f"{name}_std"] = (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0) \
                if values else None
            out[f"{name}_pm"] = (out[name], out[f"{name}_std"]) if values else None
        out["gap"] = max(present("gap"), default=None)
        statuses = sorted({r["status"] for r in group if r.get("status")})
        out["status"] = " ".join(statuses) if statuses else None
        out["edge"] = tuple(sorted({e for r in group for e in r.get("edge", ())}))
        summary.append(out)
    return summary


def summary_columns() -> list[Column]:
    """The columns of the table over several seeds (:func:`summarize`'s rows)."""
    def percent_pm(name):
        return Column(f"{name}_pm", {"val_acc": "val acc %", "test_acc": "test acc %"}[name],
                      lambda v: f"{100 * v[0]:.2f} ± {100 * v[1]:.2f}")

    return [Column("head"), Column("activation"), Column("fitted_by", "fitted by"),
            Column("gates", "gates m", "d"),
            Column("betas", "β per seed", lambda v: " ".join(f"{b:g}" for b in v)),
            percent_pm("val_acc"), percent_pm("test_acc"),
            Column("gap", "worst rel. gap", ".1e"),
            Column("excess", "vs P", lambda v: f"{100 * v:+.1f}%"), Column("status"),
            Column("heads", "heads (rank)", ".1f"), Column("parameters", "params", ".0f"),
            Column("seconds", "fit s", ".1f"), Column("select_seconds", "select s", ".1f"),
            Column("edge", "at edge", lambda v: ", ".join(v) if v else "—")]


CSV_KEYS = ("seed", "head", "activation", "fitted_by", "gates", "beta", "val_acc", "train_acc",
            "test_acc", "objective", "lower_bound", "gap", "excess", "status", "heads",
            "parameters", "iterations", "method", "certificate", "seconds", "select_seconds",
            "edge")


def write_csv(path, rows: list[dict]) -> Path:
    """The rows' scalar columns as CSV (empty cells where a value does not apply), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_KEYS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else " ".join(row[k])
                             if isinstance(row[k], (tuple, list)) else row[k])
                         for k in CSV_KEYS})
    return write_atomic(path, buffer.getvalue())


def notes_for(rows: list[dict]) -> list[str]:
    """What the columns mean, then each row's own notes."""
    notes = ["rel. gap: certified (P − D)/|P| of the convex program (SPEC.md §4); heads "
             "(rank): Σ_g rank Z_g, the heads of the network the optimum equals; params: "
             "trainable parameters of that network (fixed gates not counted).",
             "vs P: the AdamW-trained network's objective on the same program, relative to "
             "the certified P of the convex row above it (≥ 0 up to the gap).",
             "at edge: hyperparameters whose pick is still on an edge of their grid after "
             "widening it (the true optimum may lie beyond)."]
    for r in rows:
        for message in r.get("notes", []):
            label = " ".join(str(r[k]) for k in ("head", "activation") if r.get(k))
            notes.append(f"{label} ({r['fitted_by']}): {message}")
    return notes


# ------------------------------------------------------------------------------- merging
# config fields that say which rows a table fits and how the command ran, not how: tables that
# differ only in these were fitted under one protocol and can be merged
INTERRUPTED = "interrupted:"  # how the note of a table cut short by Ctrl-C starts
MERGE_MAY_DIFFER = frozenset({"heads", "activations", "baselines", "threads", "out", "gallery",
                              "faithfulness", "batch_size", "cache", "model_cache"})
_NUMERIC = {"beta", "val_acc", "train_acc", "test_acc", "objective", "lower_bound", "gap",
            "excess", "seconds", "select_seconds"}


@dataclass(frozen=True, kw_only=True)
class MergeConfig:
    """What ``cvxattn merge`` joins; its options are derived from these fields."""

    tables: tuple[Path, ...] = field(metadata=_meta(
        "folders written by `cvxattn table`, `run` or `digits` (each with its table.json), "
        "fitted on the same data under the same protocol, e.g. by commands run side by side",
        metavar="DIR"))
    out: Path = field(default=Path("results"), metadata=_meta(
        "folder for the merged table.md, table.csv, table.json, accuracy.png and gap.png "
        "(written atomically)", metavar="DIR"))

    def __post_init__(self):
        if not self.tables:
            raise ValueError("tables: expected at least one folder")
        check_folder(self.out, "out")


def _row_from_json(row: dict) -> dict:
    """A row as :func:`write_outputs` had it: the non-finite numbers JSON spells as strings
    back to floats, lists of names back to tuples."""
    out = dict(row)
    for key in _NUMERIC & out.keys():
        if isinstance(out[key], str):
            out[key] = float(out[key])
    if isinstance(out.get("edge"), list):
        out["edge"] = tuple(out["edge"])
    return out


def _merge_order(row: dict, first_seen: dict) -> tuple:
    """Where a row goes in a merged table: each seed's convex heads in the registry's order
    (linear, then gated; each followed by its network), then the baselines as first met."""
    head, activation = row.get("head"), row.get("activation")
    if head in REGISTRY and activation in ACTIVATIONS \
            and row.get("fitted_by") in ("cvxattn", "AdamW"):
        place = (0, list(REGISTRY).index(head), ACTIVATIONS.index(activation),
                 row["fitted_by"] != "cvxattn")
    else:
        place = (1, first_seen[head])
    return (row.get("seed", 0),) + place


def merge(folders: Sequence[Path]) -> dict:
    """The tables in ``folders`` as one: their rows in the order of one table (see
    :func:`_merge_order`), the shared config with the heads, activations and baselines of all,
    and each source's manifest and summary. A ValueError names the folder and the config field
    in which a table differs from the first (only :data:`MERGE_MAY_DIFFER` may), or a model
    that two tables both fitted for the same seed."""
    tables = []
    for folder in folders:
        path = Path(folder) / "table.json"
        try:
            table = json.loads(path.read_text(encoding="utf-8"))  # as write_atomic writes
            if not (isinstance(table, dict) and {"rows", "config"} <= table.keys()):
                raise ValueError("no rows and config")  # the keys write_outputs writes
        except (OSError, ValueError) as error:
            raise ValueError(f"tables: {str(folder)!r} has no readable table.json written by "
                             f"cvxattn ({error})") from None
        tables.append((folder, table))
    first_folder, first = tables[0]
    keys = {k for _, t in tables for k in t["config"]} - MERGE_MAY_DIFFER
    for folder, table in tables[1:]:
        for key in sorted(keys):
            if table["config"].get(key) != first["config"].get(key):
                raise ValueError(
                    f"tables: {str(folder)!r} was fitted with {key} = "
                    f"{table['config'].get(key)!r}, {str(first_folder)!r} with "
                    f"{first['config'].get(key)!r}; only {', '.join(sorted(MERGE_MAY_DIFFER))} "
                    "may differ between merged tables")
    rows, seen, first_seen = [], {}, {}
    for folder, table in tables:
        for row in map(_row_from_json, table["rows"]):
            model = (row.get("seed"),) + tuple(row.get(k) for k in MODEL_KEYS)
            if model in seen:
                raise ValueError(f"tables: {str(folder)!r} and {str(seen[model])!r} both have "
                                 f"the row {' '.join(str(v) for v in model if v is not None)}")
            seen[model] = folder
            first_seen.setdefault(row.get("head"), len(first_seen))
            rows.append(row)
    rows.sort(key=lambda row: _merge_order(row, first_seen))

    def union(key):
        return list(dict.fromkeys(v for _, t in tables for v in t["config"].get(key) or ()))

    config = {**first["config"], **{k: union(k) for k in ("heads", "activations", "baselines")}}
    return {"rows": rows, "config": config,
            "sources": [{"folder": str(folder), "summary": t.get("summary"),
                         "manifest": t.get("manifest"),
                         "interrupted": any(str(n).startswith(INTERRUPTED)
                                            for n in t.get("notes", ()))}
                        for folder, t in tables]}


def write_outputs(out: Path, rows: list[dict], table: str, notes: list[str], summary: str,
                  manifest: dict, config: dict, title: str,
                  by_model: list[dict] | None = None) -> list[Path]:
    """table.md, table.csv, table.json, accuracy.png and gap.png in ``out``, atomically.
    ``by_model``: the rows summarized over several seeds (:func:`summarize`): the accuracy
    figure shows their means and standard deviations, the gap figure the first seed's
    solves, and table.json keeps both (the CSV the rows of every seed)."""
    from .report import plot_accuracy, plot_gaps, write_json

    out.mkdir(parents=True, exist_ok=True)
    versions = ", ".join(f"{k} {v}" for k, v in manifest["versions"].items())
    markdown = "\n".join(
        [f"# {title}", "", f"- command: `{manifest['command']}`",
         f"- date (UTC): {manifest['date']}",
         f"- versions: {versions}, Python {manifest['python']}", f"- {summary}", "",
         table, ""] + [f"- {note}" for note in notes]) + "\n"
    return [write_atomic(out / "table.md", markdown),
            write_csv(out / "table.csv", rows),
            write_json(out / "table.json", {"manifest": manifest, "config": config,
                                            "summary": summary, "rows": rows,
                                            **({"by_model": by_model} if by_model else {}),
                                            "notes": notes}),
            plot_accuracy(by_model or rows, out / "accuracy.png",
                          title=f"{title}: test accuracy"
                          + (f", mean ± sd over {len(by_model[0]['seeds'])} seeds"
                             if by_model else "")),
            plot_gaps([r for r in rows if r["fitted_by"] == "cvxattn"
                       and r.get("seed", rows[0].get("seed")) == rows[0].get("seed")],
                      out / "gap.png")]
