"""The main job: every convex head fitted on scikit-learn's 8×8 digits, certified, tabulated.

Data. ``sklearn.datasets.load_digits`` (1797 images bundled inside scikit-learn, pixels
0..16) cut into 2×2-pixel patches on a 4×4 grid: tokens X (n, s=16, d=4), row-major token order
t = r·4 + q, each token the 4 pixels of its patch (row-major inside the patch), divided by 16
so that X ∈ [0, 1]. A seeded stratified split (75/25) gives the train and test sets;
``n_train`` / ``n_test`` take nested stratified subsets of them for quick runs.

Experiment. For each head of :data:`cvxattn.heads.REGISTRY` and each activation, the convex
program (SPEC.md §1) is solved by :func:`cvxattn.solve` to a certified relative duality gap
≤ ``tol``. With one β every head uses it; with several, each head picks its own β on a
validation split carved from the training set (a warm-started path from the largest β down,
solved to ``select_tol``), then is refitted on the whole training set at that β, warm-started
from the path — the paper's protocol (SPEC.md §6).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from .files import check_folder
from . import heads
from .heads import REGISTRY, create
from .protocol import (checked_betas, checked_gates, checked_names, fit_convex, is_count,
                       is_positive, stratified_subset)
from .report import Column

__all__ = ["DigitsConfig", "DigitsData", "patch_tokens", "load_digits_tokens",
           "stratified_subset", "split_digits", "prepare", "fit_head",
           "fit_baseline", "iter_rows", "run", "table_columns",
           "DEFAULT_GATES", "ACTIVATIONS"]

N_CLASSES = 10
PIXEL_MAX = 16.0  # load_digits pixels are integers 0..16
PATCH = 2  # 2×2-pixel patches: 8×8 images → 4×4 grid of 16 tokens with d = 4
IMAGE_SIDE = 8
GRID = (IMAGE_SIDE // PATCH, IMAGE_SIDE // PATCH)
N_FEATURES = PATCH * PATCH
ACTIVATIONS = ("linear", "gated")
# The paper (SPEC.md §6) uses m = 100 gates for the MLP and 5 heads for self-attention; the
# attention-type heads all get 5 here, which keeps their sizes comparable and the job short.
DEFAULT_GATES = heads.DEFAULT_GATES  # the heads' own defaults


def _meta(text: str, **kw) -> dict:
    """Field metadata: the --help text of the option derived from the field (cli.py)."""
    return {"help": text, **kw}


@dataclass(frozen=True)
class DigitsConfig:
    """Everything the digits job depends on; ``cvxattn digits`` options are derived from it.

    >>> DigitsConfig(beta=(1e-3,), heads=("mlp",)).heads
    ('mlp',)
    >>> DigitsConfig(beta=(-1.0,))
    Traceback (most recent call last):
    ...
    ValueError: beta: expected distinct finite numbers > 0, got (-1.0,)
    """

    heads: tuple[str, ...] = field(default=tuple(REGISTRY), metadata=_meta(
        "heads to fit, from cvxattn.heads.REGISTRY", choices=tuple(REGISTRY), metavar="HEAD"))
    activations: tuple[str, ...] = field(default=ACTIVATIONS, metadata=_meta(
        "activations to fit for each head", choices=ACTIVATIONS, metavar="ACTIVATION"))
    beta: tuple[float, ...] = field(default=(1e-3,), metadata=_meta(
        "β, the weight of the block nuclear norm (the objective is a mean over samples). One "
        "value: every head uses it. Several: each head picks its own on a validation split "
        "of the training set (warm-started path from the largest β), then is refitted on the "
        "whole training set", metavar="BETA"))
    tol: float = field(default=1e-6, metadata=_meta(
        "stop each final fit at this certified relative duality gap (P − D)/|P|"))
    max_iter: int = field(default=5000, metadata=_meta(
        "FISTA iteration limit per solve; a fit that stops before reaching --tol is "
        "reported with its status and its actual gap", metavar="N"))
    n_gates: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_GATES),
                                       metadata=_meta(
        "gates m of the gated heads (per group for bfno), as HEAD=M pairs; heads not named "
        "keep their default", metavar="HEAD=M"))
    bfno_groups: int = field(default=2, metadata=_meta(
        f"groups B of the block FNO; B must divide d = {N_FEATURES} and c = {N_CLASSES}",
        metavar="B"))
    n_train: int | None = field(default=None, metadata=_meta(
        "fit on a stratified subset of this many training images (default: the whole "
        "training split)", metavar="N"))
    n_test: int | None = field(default=None, metadata=_meta(
        "evaluate on a stratified subset of this many test images (default: the whole test "
        "split)", metavar="N"))
    test_size: float = field(default=0.25, metadata=_meta(
        "fraction of the 1797 images held out for testing", metavar="FRACTION"))
    val_fraction: float = field(default=0.2, metadata=_meta(
        "fraction of the training set held out to pick β, with several --beta values",
        metavar="FRACTION"))
    select_tol: float = field(default=1e-4, metadata=_meta(
        "relative duality gap of the path solves that pick β, with several --beta values",
        metavar="TOL"))
    seed: int = field(default=0, metadata=_meta(
        "seed of the split, the subsets and the gates"))
    baseline: bool = field(default=True, metadata=_meta(
        "add a scikit-learn LogisticRegression row (lbfgs, C = 1) on the flattened tokens "
        "(all 64 pixels)"))
    threads: int = field(default=1, metadata=_meta(
        "torch intra-op threads, set by the command line for the run (library code never "
        "sets them); 1 is fastest for these small problems (more threads are much slower "
        "when the machine is busy)", metavar="N"))
    out: Path | None = field(default=None, metadata=_meta(
        "write the table to DIR/digits.md and DIR/digits.json (atomically, with the "
        "command line, the library versions, the date and this configuration)",
        metavar="DIR"))

    def __post_init__(self):
        def fix(name, value):
            object.__setattr__(self, name, value)

        fix("heads", checked_names("heads", self.heads, tuple(REGISTRY)))
        fix("activations", checked_names("activations", self.activations, ACTIVATIONS))
        fix("beta", checked_betas(self.beta))
        if self.out is not None:
            fix("out", check_folder(self.out, "out"))
        for name in ("tol", "select_tol"):
            value = getattr(self, name)
            if not is_positive(value) or value >= 1:
                raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")
        for name in ("test_size", "val_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, Real) and 0 < value < 1):
                raise ValueError(f"{name}: expected a fraction in (0, 1), got {value!r}")
        for name in ("max_iter", "threads"):
            if not is_count(getattr(self, name)):
                raise ValueError(f"{name}: expected a positive integer, got "
                                 f"{getattr(self, name)!r}")
        fix("n_gates", checked_gates(self.n_gates, DEFAULT_GATES, tuple(REGISTRY)))
        B = self.bfno_groups
        if not is_count(B) or N_FEATURES % B or N_CLASSES % B:
            raise ValueError(f"bfno_groups: expected B dividing d = {N_FEATURES} and c = "
                             f"{N_CLASSES} (1 or 2), got {B!r}")
        if self.n_train is not None and (not is_count(self.n_train) or self.n_train < N_CLASSES):
            raise ValueError(f"n_train: expected an integer ≥ {N_CLASSES} (one image per "
                             f"class), got {self.n_train!r}")
        if self.n_test is not None and not is_count(self.n_test):
            raise ValueError(f"n_test: expected a positive integer, got {self.n_test!r}")
        if not (isinstance(self.seed, Integral) and not isinstance(self.seed, bool)
                and self.seed >= 0):
            raise ValueError(f"seed: expected an integer ≥ 0, got {self.seed!r}")
        if self.out is not None:
            fix("out", Path(self.out))
            if self.out.exists() and not self.out.is_dir():
                raise ValueError(f"out: expected a directory, got the file {str(self.out)!r}")

    @property
    def selects_beta(self) -> bool:
        return len(self.beta) > 1


# ---------------------------------------------------------------------------------- data
def patch_tokens(images, patch: int = PATCH) -> np.ndarray:
    """Cut images (n, H, W) into p×p patches: tokens (n, (H/p)·(W/p), p²).

    Token t = r·(W/p) + q is patch (r, q) (row-major grid), and its features are the patch's
    pixels row-major: X[i, r·(W/p) + q, a·p + b] = images[i, r·p + a, q·p + b].

    >>> img = np.arange(16).reshape(1, 4, 4)
    >>> patch_tokens(img, 2)[0]
    array([[ 0,  1,  4,  5],
           [ 2,  3,  6,  7],
           [ 8,  9, 12, 13],
           [10, 11, 14, 15]])
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images: expected shape (n, H, W), got {images.shape}")
    n, H, W = images.shape
    if not is_count(patch) or H % patch or W % patch:
        raise ValueError(f"patch: expected a positive integer dividing H = {H} and W = {W}, "
                         f"got {patch!r}")
    h, w = H // patch, W // patch
    grid = images.reshape(n, h, patch, w, patch)  # (n, r, a, q, b)
    return grid.transpose(0, 1, 3, 2, 4).reshape(n, h * w, patch * patch)  # (n, s, d)


def load_digits_tokens() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as tokens X (1797, 16, 4) in [0, 1] (float64) and labels y (1797,)."""
    from sklearn.datasets import load_digits

    data = load_digits()  # bundled with scikit-learn: no download
    X = patch_tokens(data.images / PIXEL_MAX, PATCH)  # (n, 16, 4)
    return X, data.target.astype(np.int64)


def split_digits(y: np.ndarray, test_size: float = 0.25, seed: int = 0,
                 n_train: int | None = None, n_test: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test indices, then stratified subsets of ``n_train``/``n_test``."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(y)), test_size=test_size, stratify=y,
                                   random_state=seed)
    for name, size, part in (("n_train", n_train, train), ("n_test", n_test, test)):
        if size is not None and size > len(part):
            raise ValueError(f"{name}: expected at most {len(part)} (the size of the split "
                             f"with test_size={test_size}), got {size}")
    train = np.sort(train) if n_train is None else stratified_subset(train, y, n_train, seed)
    test = np.sort(test) if n_test is None else stratified_subset(test, y, n_test, seed + 1)
    return train, test


@dataclass(frozen=True)
class DigitsData:
    """The tokens and labels of one run: train (and, when picking β, fit/validation) and test."""

    X_train: np.ndarray  # (n_train, 16, 4)
    y_train: np.ndarray  # (n_train,)
    X_test: np.ndarray  # (n_test, 16, 4)
    y_test: np.ndarray  # (n_test,)
    train_index: np.ndarray  # rows of load_digits
    test_index: np.ndarray
    fit_mask: np.ndarray | None = None  # (n_train,) True: fit, False: validation

    @property
    def grid(self) -> tuple[int, int]:
        return GRID


def prepare(config: DigitsConfig) -> DigitsData:
    """Load, tokenize and split the digits as ``config`` says (ValueError on impossible sizes)."""
    X, y = load_digits_tokens()
    train, test = split_digits(y, config.test_size, config.seed, config.n_train, config.n_test)
    fit_mask = None
    if config.selects_beta:
        n_val = round(config.val_fraction * len(train))
        val = stratified_subset(train, y, max(n_val, 1), config.seed + 2)
        fit_mask = ~np.isin(train, val)
        for part, name in ((y[train[fit_mask]], "fit"), (y[val], "validation")):
            if len(np.unique(part)) < N_CLASSES:
                raise ValueError(f"val_fraction: the {name} part of {len(train)} training "
                                 f"images lacks a class; expected every one of the "
                                 f"{N_CLASSES} in both (raise n_train or change val_fraction)")
    return DigitsData(X[train], y[train], X[test], y[test], train, test, fit_mask)


# ------------------------------------------------------------------------------ experiment
def fit_head(config: DigitsConfig, data: DigitsData, name: str, activation: str) -> dict:
    """One row of the table: the head fitted (β picked on validation if asked), certified."""
    gated = activation == "gated"
    head = create(name, activation, config.n_gates[name], config.seed, data.grid,
                  config.bfno_groups)
    row, _ = fit_convex(head, data, config.beta, config.tol, config.select_tol,
                        config.max_iter)
    return {"head": name, "activation": activation,
            "gates": config.n_gates[name] if gated else None, **row}


def fit_baseline(data: DigitsData) -> dict:
    """scikit-learn's LogisticRegression (lbfgs, C = 1) on the flattened tokens (64 pixels).

    Not a convex head of this library: its objective is scikit-learn's and no duality gap is
    computed, so those cells stay empty."""
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    flat = data.X_train.reshape(len(data.X_train), -1)  # (n, 64)
    model = LogisticRegression(max_iter=10_000).fit(flat, data.y_train)
    seconds = time.perf_counter() - start
    return {"head": "logistic", "activation": "linear", "gates": None, "beta": None,
            "val_acc": None,
            "train_acc": float(model.score(flat, data.y_train)),
            "test_acc": float(model.score(data.X_test.reshape(len(data.X_test), -1),
                                          data.y_test)),
            "objective": None, "lower_bound": None, "gap": None, "status": None,
            "heads": None, "iterations": int(np.max(model.n_iter_)), "certificate": None,
            "seconds": seconds, "select_seconds": None, "notes": []}


def iter_rows(config: DigitsConfig, data: DigitsData | None = None,
              progress: Callable[[str], None] | None = None) -> Iterator[dict]:
    """Fit every requested head, then the baseline; yield each row as soon as it is done."""
    data = prepare(config) if data is None else data
    jobs = [(h, a) for h in config.heads for a in config.activations]
    for k, (name, activation) in enumerate(jobs, 1):
        row = fit_head(config, data, name, activation)
        if progress is not None:
            progress(f"[{k}/{len(jobs)}] {name} {activation}: β={row['beta']:g} "
                     f"test acc {100 * row['test_acc']:.2f}%  gap {row['gap']:.1e} "
                     f"({row['status']})  {row['seconds']:.1f}s")
        yield row
    if config.baseline:
        yield fit_baseline(data)


def run(config: DigitsConfig, data: DigitsData | None = None,
        progress: Callable[[str], None] | None = None) -> list[dict]:
    """Fit every requested head (and the baseline); return one row dict per model."""
    return list(iter_rows(config, data, progress))


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def table_columns(config: DigitsConfig) -> list[Column]:
    """The columns of the printed table (the JSON keeps every key of the rows)."""
    cols = [Column("head"), Column("activation"), Column("gates", "gates m", "d"),
            Column("beta", "β", "g")]
    if config.selects_beta:
        cols.append(Column("val_acc", "val acc %", _percent))
    cols += [Column("test_acc", "test acc %", _percent), Column("objective", fmt=".6f"),
             Column("gap", "rel. gap", ".2e"), Column("status"),
             Column("heads", "heads (rank)", "d"), Column("iterations", "iters", "d"),
             Column("seconds", "fit s", ".1f")]
    if config.selects_beta:
        cols.append(Column("select_seconds", "select s", ".1f"))
    return cols
