"""The transfer-learning pipeline, step one: images → frozen backbone tokens → the token cache.

``cvxattn features`` is :func:`extract_features` on a :class:`FeaturesConfig`: it loads a data
set by name, takes a seeded subset if asked, runs EfficientNet-Lite0 (ONNX Runtime) and caches
the tokens, pooled along features to d, in ``cache/<name of the request>/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

import numpy as np

from .backbones import EfficientNetLite0
from .checks import check_integer, is_integer
from .data import ImageSet, load_cifar100, load_fashion_mnist, load_image_folder, load_samples
from .features import TokenSet, extract, load, load_projection
from .files import check_folder
from .heads import REGISTRY, create
from .io import save_solution
from .problem import Problem
from .solvers import check_tol, solve
from .protocol import is_count
from .table import ProtocolConfig
from .table import prepare as prepare_table

__all__ = ["DATASETS", "FeaturesConfig", "load_images", "extract_features", "FitConfig",
           "fit_features", "RunConfig", "run_features", "RUN_TRAIN", "RUN_TEST", "RUN_D",
           "cache_images", "ExplainConfig", "explain_features", "run_gallery"]

# The main job's default: a seeded subset sized so that `cvxattn run` ends within 15 minutes
# on a 2-core CPU (docs in README.md); --full uses all images.
RUN_TRAIN, RUN_TEST, RUN_D = 2_000, 1_000, 10
POOLS = ("avg", "pca")
SAMPLE_SETS = ("imagenet", "cifar10", "cifar100", "mnist", "fashion-mnist")
DATASETS = ("fashion-mnist", "cifar100", "folder") + tuple(f"samples-{s}" for s in SAMPLE_SETS)


def load_images(dataset: str, split: str = "train", root: Path | None = None) -> ImageSet:
    """The image set ``dataset`` (one of :data:`DATASETS`); ``root`` is the Fashion-MNIST folder
    (default: Debian's), the CIFAR-100 archive or folder, or the image folder."""
    if dataset == "fashion-mnist":
        return load_fashion_mnist(split, root)
    if dataset == "cifar100":
        if root is None:
            raise ValueError("root: expected the cifar-100-python archive or folder for "
                             "dataset 'cifar100', got none")
        return load_cifar100(root, split)
    if dataset == "folder":
        if root is None:
            raise ValueError("root: expected an image folder (root/CLASS/*.png) for dataset "
                             "'folder', got none")
        return load_image_folder(root)
    if dataset.startswith("samples-") and dataset[len("samples-"):] in SAMPLE_SETS:
        return load_samples(dataset[len("samples-"):])
    raise ValueError(f"dataset: expected one of {DATASETS}, got {dataset!r}")


def cache_images(tokens: TokenSet) -> list[np.ndarray]:
    """The images a token cache was made from, in the cache's order, read again from the data
    set its manifest names; a ValueError when they are no longer there or no longer match
    (another number of images, or other labels at the cached positions)."""
    try:
        source = tokens.manifest["request"]["dataset"]
        name, split, root = source["name"], source["split"], source.get("source")
        count = int(source["n_images"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("features: expected a manifest that names its data set, got one "
                         "without (a cache not written by cvxattn features?)") from None
    if name == "fashion-mnist":
        images = load_fashion_mnist(split, root)
    elif name == "cifar100":
        images = load_cifar100(root, split)
    elif name == "folder":
        images = load_image_folder(root)
    elif name.startswith("foolbox-"):
        images = load_samples(name[len("foolbox-"):])
    else:
        raise ValueError(f"features: expected a cache of a known data set, got {name!r}")
    inside = tokens.indices.size == 0 or (0 <= tokens.indices.min()
                                          and tokens.indices.max() < len(images))
    if len(images) != count or not inside \
            or not np.array_equal(images.labels[tokens.indices], tokens.y):
        raise ValueError(f"features: the images of {name} {split} at {root} no longer match "
                         "the cache (other images or labels); extract the tokens again")
    chosen = images.images
    if isinstance(chosen, np.ndarray):
        return list(chosen[tokens.indices])
    return [chosen[i] for i in tokens.indices.tolist()]


def _meta(text: str, **kw) -> dict:
    return {"help": text, **kw}


@dataclass(frozen=True)
class FeaturesConfig:
    """What ``cvxattn features`` extracts; its options are derived from these fields."""

    dataset: str = field(default="fashion-mnist", metadata=_meta(
        "the image set: fashion-mnist (Debian's dataset-fashion-mnist, or --root), cifar100 "
        "(--root: the cifar-100-python archive or folder), folder (--root/CLASS/*.png), or "
        "samples-NAME, the 20 real images per data set shipped in foolbox",
        choices=DATASETS))
    split: str = field(default="train", metadata=_meta("split of the data set (train or test)",
                                                       choices=("train", "test")))
    root: Path | None = field(default=None, metadata=_meta(
        "where the data set is (see --dataset)", metavar="PATH"))
    n: int | None = field(default=None, metadata=_meta(
        "a seeded random subset of this many images (default: all)", metavar="N"))
    seed: int = field(default=0, metadata=_meta("seed of the subset"))
    image_size: int = field(default=224, metadata=_meta(
        "backbone input size in pixels: 224 gives 7×7 = 49 tokens, 448 gives 14×14 = 196",
        metavar="PIXELS"))
    d: int = field(default=100, metadata=_meta(
        "features per token after reducing the backbone's 1280 (the paper pools to 100)",
        metavar="D"))
    pool: str = field(default="avg", metadata=_meta(
        "how the 1280 channels become d: avg averages d groups of neighbouring channels; pca "
        "projects on the top d principal components of training tokens (fitted on this "
        "cache's first 2048 images, or taken from --pca-from)", choices=POOLS))
    pca_from: Path | None = field(default=None, metadata=_meta(
        "with --pool pca: the training images' token cache whose PCA projects these images "
        "(required for --split test: test statistics never enter the projection)",
        metavar="DIR"))
    batch_size: int = field(default=32, metadata=_meta("images per backbone batch",
                                                       metavar="N"))
    cache: Path = field(default=Path("features"), metadata=_meta(
        "folder of token caches; this request's tokens go to a sub-folder named after it",
        metavar="DIR"))
    model_cache: Path | None = field(default=None, metadata=_meta(
        "folder for the exported ONNX model (default: ~/.cache/cvxattn)", metavar="DIR"))
    threads: int | None = field(default=None, metadata=_meta(
        "ONNX Runtime threads (default: the cores other processes leave free)", metavar="N"))

    def __post_init__(self):
        for name in ("n", "image_size", "d", "batch_size", "threads"):
            value = getattr(self, name)
            if value is not None and not is_integer(value, 1):
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        check_integer(self.seed, "seed")
        if self.image_size % 32:
            raise ValueError(f"image_size: expected a multiple of 32, got {self.image_size}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {DATASETS}, got {self.dataset!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool: expected one of {POOLS}, got {self.pool!r}")
        if self.pca_from is not None and self.pool != "pca":
            raise ValueError("pca_from: expected only with --pool pca")
        if self.pool == "pca" and self.split == "test" and self.pca_from is None:
            raise ValueError("pca_from: expected the training cache whose PCA projects the "
                             "test images (a PCA fitted on test images would leak them)")
        projection = None
        if self.pca_from is not None:
            object.__setattr__(self, "pca_from", Path(self.pca_from))
            # read once, before any work (a ValueError names the cache); not a field
            projection = load_projection(self.pca_from)
        object.__setattr__(self, "_projection", projection)
        # the folders are checked before any image is read: a cache that cannot be written
        # would otherwise fail after the data set is loaded
        for name in ("cache", "model_cache"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_folder(getattr(self, name), name))

    @property
    def folder(self) -> Path:
        """The cache folder of this request."""
        subset = "all" if self.n is None else f"n{self.n}-seed{self.seed}"
        pool = "" if self.pool == "avg" else "-pca" + (
            "" if self._projection is None else self._projection.sha256[:12])
        return self.cache / (f"{self.dataset}-{self.split}-efficientnet-lite0-{self.image_size}"
                             f"-d{self.d}{pool}-{subset}")


def extract_features(config: FeaturesConfig, progress: bool = True) -> tuple[TokenSet, float]:
    """Tokens of the configured images (cached); returns them and the seconds it took."""
    start = time.perf_counter()
    images = load_images(config.dataset, config.split, config.root)
    indices = None
    if config.n is not None:
        if config.n > len(images):
            raise ValueError(f"n: expected at most the {len(images)} images of "
                             f"{config.dataset} {config.split}, got {config.n}")
        rng = np.random.default_rng(config.seed)
        indices = np.sort(rng.choice(len(images), config.n, replace=False))
    backbone = EfficientNetLite0(image_size=config.image_size, cache_dir=config.model_cache,
                                 batch_size=config.batch_size, threads=config.threads)
    pool = None
    if config.pool == "pca":
        pool = "pca" if config._projection is None else config._projection
    tokens = extract(images, backbone, config.folder, d=config.d, indices=indices,
                     batch_size=config.batch_size, progress=progress, pool=pool)
    return tokens, time.perf_counter() - start


@dataclass(frozen=True)
class FitConfig:
    """What ``cvxattn fit`` fits; its options are derived from these fields."""

    features: Path = field(metadata=_meta(
        "token cache of the training images (a folder written by `cvxattn features`)",
        metavar="DIR"))
    out: Path = field(metadata=_meta(
        "where to save the model: OUT.safetensors and OUT.json", metavar="OUT"))
    test_features: Path | None = field(default=None, metadata=_meta(
        "token cache of test images, to report test accuracy", metavar="DIR"))
    head: str = field(default="attention", metadata=_meta(
        "the convex head", choices=tuple(REGISTRY)))
    activation: str = field(default="linear", metadata=_meta(
        "linear, or gated ReLU with fixed gates", choices=("linear", "gated")))
    n_gates: int | None = field(default=None, metadata=_meta(
        "gates m of a gated head (default: the head's)", metavar="M"))
    groups: int = field(default=5, metadata=_meta(
        "groups B of the bfno head (must divide d and the number of classes)", metavar="B"))
    beta: float = field(default=1e-3, metadata=_meta(
        "β, the weight of the block nuclear norm (the loss is a mean over samples)"))
    tol: float = field(default=1e-6, metadata=_meta(
        "stop at this certified relative duality gap (P − D)/|P|"))
    max_iter: int = field(default=5000, metadata=_meta("solver iteration limit", metavar="N"))
    seed: int = field(default=0, metadata=_meta("seed of the sampled gates"))

    def __post_init__(self):
        # everything checkable is checked before the solve, which may take long
        for name in ("features", "out", "test_features"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        check_tol(self.tol)
        if not is_count(self.max_iter):
            raise ValueError(f"max_iter: expected a positive integer, got {self.max_iter!r}")
        for name in ("features", "test_features"):
            folder = getattr(self, name)
            if folder is not None and not folder.is_dir():
                raise ValueError(f"{name}: expected a token cache folder (with its "
                                 f"manifest.json), got {str(folder)!r}")
        if self.out.is_dir():
            raise ValueError(f"out: expected a file name to save the model under, got the "
                             f"folder {str(self.out)!r}")
        check_folder(self.out.parent, "out")
        check_integer(self.seed, "seed")


def fit_features(config: FitConfig):
    """Solve the configured head on cached tokens and save it; returns (solution, test
    accuracy or None, path of the saved description)."""
    train = load(config.features)
    n_gates = config.n_gates if config.activation == "gated" else None
    head = create(config.head, config.activation, n_gates, config.seed, train.grid,
                  config.groups)
    problem = Problem(head, train.X, train.y, config.beta, n_classes=len(train.classes))
    solution = solve(problem, tol=config.tol, max_iter=config.max_iter)
    accuracy = None
    if config.test_features is not None:
        test = load(config.test_features)
        accuracy = float((solution.predict(test.X).numpy() == test.y).mean())
    return solution, accuracy, save_solution(solution, config.out)


@dataclass(frozen=True)
class ExplainConfig:
    """What ``cvxattn explain`` explains; its options are derived from these fields."""

    model: Path = field(metadata=_meta(
        "a model saved by `cvxattn fit` (OUT, OUT.json or OUT.safetensors)", metavar="MODEL"))
    features: Path = field(metadata=_meta(
        "token cache of the images to explain (a folder written by `cvxattn features`, with "
        "the model's tokens and classes)", metavar="DIR"))
    out: Path = field(metadata=_meta(
        "folder for the gallery: index.html, a figure per image, spectrum.png, explain.json",
        metavar="DIR"))
    images: tuple[int, ...] | None = field(default=None, metadata=_meta(
        "positions in the cache of the images to draw (default: the first 8)", metavar="I"))
    faithfulness: int = field(default=200, metadata=_meta(
        "measure deletion and foreground overlap on the first N images of the cache (0: "
        "skip)", metavar="N"))
    max_clusters: int = field(default=6, metadata=_meta(
        "most token clusters per image (the eigengap picks the number)", metavar="K"))
    seed: int = field(default=0, metadata=_meta("seed of the clustering and random orders"))

    def __post_init__(self):
        for name in ("model", "features", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        check_folder(self.out, "out")
        if not self.features.is_dir():
            raise ValueError(f"features: expected a token cache folder, got {str(self.features)!r}")
        if self.images is not None:
            if not self.images or not all(isinstance(i, Integral) and not isinstance(i, bool)
                                          and i >= 0 for i in self.images):
                raise ValueError(f"images: expected positions ≥ 0 in the cache, got "
                                 f"{self.images!r}")
        for name, low in (("faithfulness", 0), ("max_clusters", 2), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an integer ≥ {low}, got {value!r}")


def explain_features(config: ExplainConfig) -> Path:
    """Explain a saved model on cached tokens and their images; returns the gallery's page.

    The deletion reference is the mean token of the cache (the model was fitted on the raw
    cached tokens by `cvxattn fit`)."""
    from .explain import measure, write_gallery
    from .explain.gallery import crop_fraction_of
    from .io import load_model

    model = load_model(config.model)
    tokens = load(config.features)
    s, d, c = model.head.dims
    if (tokens.s, tokens.d) != (s, d) or len(tokens.classes) != c:
        raise ValueError(f"features: expected tokens (n, {s}, {d}) of {c} classes for the "
                         f"model {model.head!r}, got ({tokens.n}, {tokens.s}, {tokens.d}) of "
                         f"{len(tokens.classes)} classes")
    indices = list(range(min(8, tokens.n))) if config.images is None else list(config.images)
    if max(indices) >= tokens.n:
        raise ValueError(f"images: expected positions in [0, {tokens.n}) of the cache, got "
                         f"{[i for i in indices if i >= tokens.n]}")
    images = cache_images(tokens)
    crop = crop_fraction_of(tokens.manifest)
    numbers = None
    if config.faithfulness:
        k = min(config.faithfulness, tokens.n)
        numbers = measure(model, tokens.X[:k], tokens.X.reshape(-1, d).mean(0), images[:k],
                          tokens.grid, crop, min(config.max_clusters, s), config.seed)
    return write_gallery(config.out, model, tokens.X, images, tokens.y, tokens.classes,
                         tokens.grid, indices, crop, min(config.max_clusters, s), config.seed,
                         numbers, title=f"cvxattn explain: {config.model.name} on "
                                        f"{config.features.name}")


@dataclass(frozen=True, kw_only=True)
class RunConfig(ProtocolConfig):
    """What ``cvxattn run`` does: the features of a seeded subset, then the table."""

    dataset: str = field(default="fashion-mnist", metadata=_meta(
        "the image set (see `cvxattn features --help`)", choices=DATASETS))
    root: Path | None = field(default=None, metadata=_meta(
        "where the data set is (default for fashion-mnist: Debian's folder)", metavar="PATH"))
    n_train: int = field(default=RUN_TRAIN, metadata=_meta(
        "a seeded random subset of this many training images", metavar="N"))
    n_test: int = field(default=RUN_TEST, metadata=_meta(
        "a seeded random subset of this many test images", metavar="N"))
    full: bool = field(default=False, metadata=_meta(
        "use every training and test image (ignores --n-train and --n-test)"))
    d: int = field(default=RUN_D, metadata=_meta(
        "features per token after reducing the backbone's 1280 (see --pool)", metavar="D"))
    pool: str = field(default="pca", metadata=_meta(
        "pca: project on the top d principal components of the training tokens (the test "
        "tokens with the same projection); avg: average d groups of neighbouring channels "
        "(the paper's pooling)", choices=POOLS))
    image_size: int = field(default=224, metadata=_meta(
        "backbone input size: 224 gives 7×7 = 49 tokens", metavar="PIXELS"))
    batch_size: int = field(default=32, metadata=_meta("images per backbone batch",
                                                       metavar="N"))
    cache: Path = field(default=Path("features"), metadata=_meta(
        "folder of token caches (reused when the request matches)", metavar="DIR"))
    model_cache: Path | None = field(default=None, metadata=_meta(
        "folder for the exported ONNX model (default: ~/.cache/cvxattn)", metavar="DIR"))
    gallery: int = field(default=8, metadata=_meta(
        "test images drawn in the explanation gallery of the best attention-type head "
        "(OUT/explain/; 0: no gallery)", metavar="N"))
    faithfulness: int = field(default=200, metadata=_meta(
        "test images on which the gallery measures deletion and foreground overlap",
        metavar="N"))

    def __post_init__(self):
        super().__post_init__()
        for name in ("gallery", "faithfulness"):
            value = getattr(self, name)
            if not isinstance(value, Integral) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: expected an integer ≥ 0, got {value!r}")
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if not is_count(value):
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")

    def features(self, split: str, threads: int | None = None) -> FeaturesConfig:
        """The ``cvxattn features`` request of one split (ONNX Runtime on ``threads``); with
        ``pool="pca"`` the test split's needs the training split's cache made first."""
        n = None if self.full else (self.n_train if split == "train" else self.n_test)
        pca_from = None
        if self.pool == "pca" and split == "test":
            pca_from = self.features("train").folder
        return FeaturesConfig(dataset=self.dataset, split=split, root=self.root, n=n,
                              seed=self.seed, image_size=self.image_size, d=self.d,
                              pool=self.pool, pca_from=pca_from, batch_size=self.batch_size,
                              cache=self.cache, model_cache=self.model_cache, threads=threads)


def run_features(config: RunConfig, threads: int | None = None):
    """The tokens of both splits (extracted or read from the cache, ONNX Runtime on
    ``threads``), prepared for the table."""
    tokens = {}
    for split in ("train", "test"):
        try:
            tokens[split], _ = extract_features(config.features(split, threads))
        except ValueError as error:  # name the option of `run`, not of `features`
            message = str(error)
            if message.startswith("n:"):
                message = f"n_{split}:" + message[2:]
            raise ValueError(message) from None
    return prepare_table(config, tokens["train"], tokens["test"])


ATTENTION_TYPE = ("attention", "mixer", "fno", "bfno")  # the paper's attention-type heads


def run_gallery(config: RunConfig, data, fitted: dict) -> Path | None:
    """The explanation gallery of the best attention-type head (highest validation accuracy,
    then test order) among ``fitted`` {(head, activation): (row, solution)}, on the test
    images: one figure per class for the first ``config.gallery`` classes, and the
    faithfulness numbers on the first ``config.faithfulness`` test images. Written to
    ``config.out / "explain"``; None when no attention-type head was fitted."""
    from .explain import measure, write_gallery
    from .explain.gallery import crop_fraction_of

    candidates = [(row.get("val_acc") or 0.0, row["test_acc"], key) for key, (row, _) in
                  fitted.items() if key[0] in ATTENTION_TYPE]
    if not candidates or not config.gallery:
        return None
    *_, key = max(candidates)
    row, solution = fitted[key]
    test, _ = extract_features(config.features("test"), progress=False)
    images = cache_images(test)
    crop = crop_fraction_of(test.manifest)
    first = {}
    for i, label in enumerate(data.y_test.tolist()):
        first.setdefault(label, i)
    indices = [first[k] for k in sorted(first)][:config.gallery]
    numbers = None
    if config.faithfulness:
        k = min(config.faithfulness, len(data.y_test))
        reference = data.X_train.reshape(-1, data.X_train.shape[2]).mean(0)
        numbers = measure(solution, data.X_test[:k], reference, images[:k], data.grid, crop,
                          seed=config.seed)
    path = [{"beta": entry[0], "heads": entry[1]} for entry in row.get("path", [])]
    return write_gallery(config.out / "explain", solution, data.X_test, images, data.y_test,
                         data.classes, data.grid, indices, crop, seed=config.seed,
                         numbers=numbers, path=path or None,
                         title=f"{key[0]} {key[1]}: the best attention-type head of the table "
                               f"(validation accuracy {100 * (row.get('val_acc') or 0):.2f} %)",
                         notes=[f"β = {row['beta']:g}, certified relative gap "
                                f"{row['gap']:.1e} ({row['status']}), {row['heads']} heads, "
                                f"test accuracy {100 * row['test_acc']:.2f} %; tokens "
                                "standardized with the training statistics, deletion reference "
                                "the training-mean token."])
