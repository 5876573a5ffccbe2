"""A small job on scikit-learn's 8×8 digits: a data source for the table protocol.

Data. ``sklearn.datasets.load_digits`` (1797 images bundled inside scikit-learn, pixels
0..16) cut into 2×2-pixel patches on a 4×4 grid: tokens X (n, s=16, d=4), row-major token order
t = r·4 + q, each token the 4 pixels of its patch (row-major inside the patch), divided by 16
so that X ∈ [0, 1]. A seeded stratified split (75/25) gives the train and test sets;
``n_train`` / ``n_test`` take nested stratified subsets of them for quick runs.

Experiment. Exactly ``cvxattn table``'s (:mod:`cvxattn.table`): the tokens are two
:class:`~cvxattn.features.TokenSet` objects fed to :func:`cvxattn.table.prepare` and
:func:`cvxattn.table.iter_rows`, so every convex head picks β on validation and is certified,
next to the same baselines (all but ``probe-full``: there are no backbone channels here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

import numpy as np

from . import heads
from .checks import is_integer
from .features import TokenSet
from .protocol import stratified_subset
from .table import BASELINES, ProtocolConfig, TableData
from .table import prepare as prepare_table

__all__ = ["DigitsConfig", "patch_tokens", "load_digits_tokens", "split_digits",
           "digits_tokens", "prepare", "BASELINES_DIGITS"]

N_CLASSES = 10
PIXEL_MAX = 16.0  # load_digits pixels are integers 0..16
PATCH = 2  # 2×2-pixel patches: 8×8 images → 4×4 grid of 16 tokens with d = 4
IMAGE_SIDE = 8
GRID = (IMAGE_SIDE // PATCH, IMAGE_SIDE // PATCH)
N_FEATURES = PATCH * PATCH
BASELINES_DIGITS = tuple(b for b in BASELINES if b != "probe-full")  # no backbone channels


def _meta(text: str, **kw) -> dict:
    """Field metadata: the --help text of the option derived from the field (cli.py)."""
    return {"help": text, **kw}


@dataclass(frozen=True, kw_only=True)
class DigitsConfig(ProtocolConfig):
    """``cvxattn digits``: the table protocol's options, the digits' own (the split and its
    subsets), and the defaults these tokens need (B = 2 groups: d = 4; every head's own
    gates; no ``probe-full``).

    >>> DigitsConfig(beta=(1e-3,), heads=("mlp",)).heads
    ('mlp',)
    >>> DigitsConfig(beta=(-1.0,))
    Traceback (most recent call last):
    ...
    ValueError: beta: expected distinct finite numbers > 0, got (-1.0,)
    """

    GATE_DEFAULTS = heads.DEFAULT_GATES

    n_gates: Mapping[str, int] = field(
        default_factory=lambda: dict(heads.DEFAULT_GATES), metadata=_meta(
        "gates m of the gated heads (per group for bfno), as HEAD=M pairs; heads not named "
        "keep their default", metavar="HEAD=M"))
    bfno_groups: int = field(default=2, metadata=_meta(
        f"groups B of the block FNO; B must divide d = {N_FEATURES} and c = {N_CLASSES}",
        metavar="B"))
    baselines: tuple[str, ...] = field(default=BASELINES_DIGITS, metadata=_meta(
        "baselines (see `cvxattn table --help`), or none", choices=BASELINES_DIGITS + ("none",),
        metavar="BASELINE"))
    n_train: int | None = field(default=None, metadata=_meta(
        "fit on a stratified subset of this many training images (default: the whole "
        "training split)", metavar="N"))
    n_test: int | None = field(default=None, metadata=_meta(
        "evaluate on a stratified subset of this many test images (default: the whole test "
        "split)", metavar="N"))
    test_size: float = field(default=0.25, metadata=_meta(
        "fraction of the 1797 images held out for testing", metavar="FRACTION"))
    out: Path = field(default=Path("results/digits"), metadata=_meta(
        "folder for table.md, table.csv, table.json, accuracy.png and gap.png (written "
        "atomically)", metavar="DIR"))

    def __post_init__(self):
        super().__post_init__()
        if "probe-full" in self.baselines:
            raise ValueError(f"baselines: expected names from {BASELINES_DIGITS} (the digits "
                             "have no backbone channels for probe-full)")
        B = self.bfno_groups
        if N_FEATURES % B or N_CLASSES % B:
            raise ValueError(f"bfno_groups: expected B dividing d = {N_FEATURES} and c = "
                             f"{N_CLASSES} (1 or 2), got {B!r}")
        if self.n_train is not None and not is_integer(self.n_train, N_CLASSES):
            raise ValueError(f"n_train: expected an integer ≥ {N_CLASSES} (one image per "
                             f"class), got {self.n_train!r}")
        if self.n_test is not None and not is_integer(self.n_test, 1):
            raise ValueError(f"n_test: expected a positive integer, got {self.n_test!r}")
        value = self.test_size
        if not (isinstance(value, Real) and not isinstance(value, bool) and 0 < value < 1):
            raise ValueError(f"test_size: expected a fraction in (0, 1), got {value!r}")


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
    if not is_integer(patch, 1) or H % patch or W % patch:
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


def digits_tokens(config: DigitsConfig) -> tuple[TokenSet, TokenSet]:
    """The training and test tokens ``config`` asks for, as token sets (no backbone: the
    features are the pixels, so ``features_mean`` is None)."""
    X, y = load_digits_tokens()
    train, test = split_digits(y, config.test_size, config.seed, config.n_train, config.n_test)
    classes = tuple(str(k) for k in range(N_CLASSES))

    def tokens(index, split):
        manifest = {"request": {"dataset": {"name": "digits", "split": split,
                                            "n_images": len(y)}}}
        return TokenSet(X=X[index].astype(np.float32), y=y[index], indices=index,
                        classes=classes, grid=GRID, manifest=manifest)

    return tokens(train, "train"), tokens(test, "test")


def prepare(config: DigitsConfig) -> TableData:
    """The digits of ``config``, standardized and split for the table protocol."""
    return prepare_table(config, *digits_tokens(config))
