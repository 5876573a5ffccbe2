"""The on-disk token cache: images → frozen backbone tokens → pooled to d → safetensors shards.

:func:`extract` runs a backbone over (a subset of) an image set once, pools each token's
F features to d by adaptive average pooling (the paper pools EfficientNet's 1280 to d = 100),

    X[i, t, k] = mean_{f ∈ [⌊kF/d⌋, ⌈(k+1)F/d⌉)} tokens[i, t, f]      X: (n, s, d) float32,

and keeps the result in ``cache_dir``; :func:`load` reads it back without the backbone.

On disk::

    cache_dir/manifest.json               what was asked for and what is done (JSON)
    cache_dir/shard-00000.safetensors     "tokens" (k, s, d) float32, "labels" (k,) int64,
    cache_dir/shard-00001.safetensors     "indices" (k,) int64 (positions in the image set),
    ...                                   "features_mean" (k, F) float32: every one of the
                                          backbone's F features averaged over the tokens,
                                          before pooling (the standard linear probe's input)
    cache_dir/projection.safetensors      with ``pool="pca"`` only: the PCA it fitted
                                          (cvxattn.pca.TokenPCA)

Instead of averaging, ``pool="pca"`` reduces F to d by a PCA of the tokens of the cache's first
shard (its first ``shard_size`` images: fit it on training images only), saved with the
cache; ``pool=load(train_cache).projection`` projects other images (the test set) with that
same PCA, and their request records its sha256.

The manifest holds the request (dataset name/split/source/size/classes, a checksum and the
count of the indices and of their labels, ``backbone.describe()``, image size, grid, d, the
pooling function, the shard size), the package versions, and one entry per finished shard with
the sha256 of its file and of the pixels it was computed from. Every file is written atomically
(temporary file + ``os.replace``) and the manifest is rewritten after each shard, so a killed
extraction resumes at the first unfinished shard. A manifest made for another request is never
reused: the cache is redone, with a warning on the ``cvxattn.features`` logger saying why. A
shard whose file fails its sha256, or whose images changed (edited in place: same labels, other
pixels), is recomputed.
Nothing is pickled.

>>> import tempfile, numpy as np
>>> class Images:  # any object with these attributes (cvxattn.data.ImageSet)
...     name, split, source, classes = "toy", "train", "memory", ("a", "b")
...     images = [np.full((4, 4), v, np.uint8) for v in range(5)]
...     labels = np.array([0, 1, 0, 1, 0])
>>> class Backbone:  # cvxattn.backbones.Backbone: 2 tokens of 3 features per image
...     name, image_size, grid, n_features = "toy", 4, (1, 2), 3
...     def describe(self): return {"name": "toy", "version": 1}
...     def tokens(self, images):
...         return np.stack([np.full((2, 3), im.mean(), np.float32) for im in images])
>>> with tempfile.TemporaryDirectory() as cache:
...     ts = extract(Images(), Backbone(), cache, d=2, progress=False)
...     again = load(cache)
>>> ts.X.shape, ts.y.tolist(), again.X[4, 0].tolist()
((5, 2, 2), [0, 1, 0, 1, 0], [4.0, 4.0])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from tqdm import tqdm

from .backbones.base import pool_features
from .checks import check_integer, is_integer
from .files import write_atomic
from .pca import Moments, TokenPCA
from .report import environment, to_jsonable, write_json

__all__ = ["TokenSet", "extract", "load", "load_projection", "MANIFEST", "FORMAT",
           "PROJECTION"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PROJECTION = "projection.safetensors"  # the PCA fitted by pool="pca"
FORMAT = "cvxattn.features/2"  # 2: pixel hashes and the full-width mean features
_SHARD = re.compile(r"^shard-\d{5}\.safetensors$")
_PACKAGES = ("cvxattn", "torch", "numpy", "safetensors", "tqdm")


@dataclass(frozen=True, eq=False)
class TokenSet:
    """Cached tokens of an image set: X (n, s, d) float32, y (n,) int64, the image indices
    (n,) int64 they came from, the class names, the token grid (h, w) with h·w = s, the
    manifest that describes how they were made, and ``features_mean`` (n, F) float32, all F
    features of the backbone averaged over the tokens before pooling to d (the input of the
    standard linear probe). ``projection``: the PCA this cache fitted (``pool="pca"``),
    to pass as ``pool`` when extracting the test images; None otherwise."""

    X: np.ndarray
    y: np.ndarray
    indices: np.ndarray
    classes: tuple[str, ...]
    grid: tuple[int, int]
    manifest: dict
    features_mean: np.ndarray | None = None  # (n, F): the backbone's F features, token mean
    projection: TokenPCA | None = None

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def s(self) -> int:
        return self.X.shape[1]

    @property
    def d(self) -> int:
        return self.X.shape[2]

    def __len__(self) -> int:
        return self.n


# ------------------------------------------------------------------ validation
def _check_images(images) -> None:
    for attr in ("name", "split", "images", "labels", "classes"):
        if not hasattr(images, attr):
            raise ValueError(f"images: expected an ImageSet with .{attr}, got "
                             f"{type(images).__name__} without it")
    labels = np.asarray(images.labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"images: expected .labels of shape (n,) and integer dtype, got shape "
                         f"{labels.shape} and dtype {labels.dtype}")
    if len(images.images) != len(labels):
        raise ValueError(f"images: expected as many images as labels, got {len(images.images)} "
                         f"images and {len(labels)} labels")


def _check_backbone(backbone) -> tuple[int, int]:
    for attr in ("name", "image_size", "grid", "n_features", "describe", "tokens"):
        if not hasattr(backbone, attr):
            raise ValueError(f"backbone: expected a Backbone with .{attr}, got "
                             f"{type(backbone).__name__} without it")
    grid = tuple(backbone.grid)
    if len(grid) != 2 or not all(is_integer(g, 1) for g in grid):
        raise ValueError(f"backbone: expected .grid (h, w) of positive integers, got {grid!r}")
    check_integer(backbone.n_features, "backbone.n_features", 1)
    return int(grid[0]), int(grid[1])


def _check_indices(indices, n_images: int) -> np.ndarray:
    if indices is None:
        return np.arange(n_images, dtype=np.int64)
    array = np.asarray(indices)
    if array.ndim != 1 or array.size == 0 or (array.dtype.kind not in "iu"):
        raise ValueError(f"indices: expected a non-empty 1-D array of integers, got shape "
                         f"{array.shape} and dtype {array.dtype}")
    if array.min() < 0 or array.max() >= n_images:
        raise ValueError(f"indices: expected values in [0, {n_images}), got values in "
                         f"[{array.min()}, {array.max()}]")
    return array.astype(np.int64)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pixels_sha256(images, block: np.ndarray) -> str:
    """sha256 of the pixels of ``images.images[block]`` (each image's shape, dtype and bytes,
    in order): the content a shard's tokens were computed from. Labels and indices do not
    change when images are edited in place, so a shard is reused only if this matches too."""
    digest = hashlib.sha256()
    for t in block.tolist():
        image = np.ascontiguousarray(images.images[t])
        digest.update(f"{image.shape}{image.dtype.str};".encode())
        digest.update(image.data)
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    """The value as it reads back from the manifest (JSON round trip), for comparisons."""
    return json.loads(json.dumps(to_jsonable(value), sort_keys=True, allow_nan=False))


def _request(images, backbone, grid, d, pool_name, indices, shard_size) -> dict:
    """Everything that determines the cached bytes; a cache is reused only if this matches."""
    labels = np.asarray(images.labels)[indices].astype("<i8")
    return _canonical({
        "dataset": {"name": images.name, "split": images.split,
                    "source": getattr(images, "source", None), "n_images": len(images.labels),
                    "classes": list(images.classes)},
        "indices": {"count": len(indices), "sha256": _sha256(indices.astype("<i8").tobytes()),
                    "labels_sha256": _sha256(labels.tobytes())},
        "backbone": {"name": backbone.name, "image_size": backbone.image_size, "grid": grid,
                     "n_features": backbone.n_features, "description": backbone.describe()},
        "pool": {"d": d, **(pool_name if isinstance(pool_name, dict)
                             else {"function": pool_name})},
        "shard_size": shard_size,
    })


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Paths of the leaves where two JSON values differ (``pool.d: 5 → 3``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if old == new else [f"{path or 'request'}: {_short(old)} → {_short(new)}"]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------------ files
def _read_manifest(root: Path) -> dict | None:
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or manifest_problem(manifest) is not None:
        return None
    return manifest


def manifest_problem(manifest: dict) -> str | None:
    """Why a cache manifest cannot be believed, or None. A manifest is data from disk: its sizes
    must be positive integers, agree with each other and with the request it records
    (classes, grid, number of images, pooled d), and every shard entry must be the one
    :func:`extract` writes at its index: the plain file name ``shard-NNNNN.safetensors``,
    the start and count that the shard size gives, the sha256 of its file and of its pixels.
    Anything else (a file name leading out of the folder, rows that no shard covers) would
    be followed or read as garbage."""
    for name in ("n", "s", "d", "n_shards"):
        if not is_integer(manifest.get(name), 1):
            return f"{name}: expected a positive integer, got {manifest.get(name)!r}"
    n, s, d = manifest["n"], manifest["s"], manifest["d"]
    request = manifest.get("request")
    if not isinstance(request, dict) or not is_integer(request.get("shard_size"), 1):
        return "request: expected the request the cache was made for, with its shard_size"
    if not isinstance(request.get("backbone"), dict) \
            or not is_integer(request["backbone"].get("n_features"), d):
        return f"request.backbone.n_features: expected an integer ≥ d = {d}"
    size = request["shard_size"]
    if manifest["n_shards"] != -(-n // size):
        return f"n_shards: expected ⌈n / shard_size⌉ = {-(-n // size)}, got {manifest['n_shards']}"
    for name in ("dataset", "backbone", "indices", "pool"):
        if not isinstance(request.get(name), dict):
            return f"request.{name}: expected an object, got {request.get(name)!r}"
    grid, classes = manifest.get("grid"), manifest.get("classes")
    if not (isinstance(grid, list) and len(grid) == 2 and all(is_integer(g, 1) for g in grid)
            and grid[0] * grid[1] == s):
        return f"grid: expected [h, w] with h·w = s = {s}, got {grid!r}"
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        return f"classes: expected a list of class names, got {classes!r}"
    recorded = [("classes", request["dataset"].get("classes"), classes),
                ("grid", request["backbone"].get("grid"), grid),
                ("n", request["indices"].get("count"), n)]
    pooled = request["pool"].get("d", d)
    recorded.append(("d", d if pooled is None else pooled, d))
    for name, asked, stored in recorded:
        if asked != stored:
            return f"{name}: the request recorded {asked!r}, the manifest says {stored!r}"
    shards, previous = manifest.get("shards"), -1
    if not isinstance(shards, list):
        return f"shards: expected a list, got {type(shards).__name__}"
    for entry in shards:
        i = entry.get("index") if isinstance(entry, dict) else None
        if not (is_integer(i, previous + 1) and i < manifest["n_shards"]):
            return f"shards: expected increasing indices below n_shards, got {i!r}"
        previous, start = i, i * size
        if entry.get("file") != _shard_name(i):
            return f"shards[{i}].file: expected {_shard_name(i)!r}, got {entry.get('file')!r}"
        if entry.get("start") != start or entry.get("count") != min(size, n - start):
            return (f"shards[{i}]: expected start {start} and count {min(size, n - start)}, "
                    f"got {entry.get('start')!r} and {entry.get('count')!r}")
        for key in ("sha256", "pixels_sha256"):
            if not (isinstance(entry.get(key), str) and re.fullmatch(r"[0-9a-f]{64}", entry[key])):
                return f"shards[{i}].{key}: expected 64 hexadecimal digits"
    projection = manifest.get("projection")
    if projection is not None and not (
            isinstance(projection, dict) and projection.get("file") == PROJECTION
            and isinstance(projection.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", projection["sha256"])):
        return f"projection: expected {{'file': {PROJECTION!r}, 'sha256': 64 hexadecimal " \
               f"digits}}, got {_short(projection)}"
    if manifest.get("complete") and len(shards) != manifest["n_shards"]:
        return f"complete: a complete cache has {manifest['n_shards']} shards, got {len(shards)}"
    return None


def _clear(root: Path) -> None:
    """Remove this cache's own files (manifest, shards, stale temporaries); nothing else."""
    for path in root.iterdir():
        if path.is_file() and (path.name in (MANIFEST, PROJECTION) or _SHARD.match(path.name)
                               or _is_temporary(path.name)):
            path.unlink()


def _is_temporary(name: str) -> bool:
    return name.endswith(".tmp") and (
        name.startswith((f".{MANIFEST}.", f".{PROJECTION}."))
        or bool(re.match(r"^\.shard-\d{5}\.safetensors\.", name)))


def _read_shard(root: Path, entry: dict) -> dict[str, np.ndarray] | None:
    """A shard's tensors if its file's sha256 matches the manifest entry, else None."""
    try:
        data = (root / entry["file"]).read_bytes()
    except OSError:
        return None
    if _sha256(data) != entry["sha256"]:
        return None
    return safetensors.numpy.load(data)


def _read_projection(root: Path, entry: dict | None) -> TokenPCA | None:
    """The PCA a cache fitted, if its file matches the manifest's sha256, else None."""
    if entry is None:
        return None
    try:
        data = (root / PROJECTION).read_bytes()
    except OSError:
        return None
    if _sha256(data) != entry["sha256"]:
        return None
    try:
        return TokenPCA.from_bytes(data)
    except ValueError:
        return None


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


# ------------------------------------------------------------------ API
def extract(images, backbone, cache_dir: str | os.PathLike, d: int | None = 100,
            indices: Sequence[int] | np.ndarray | None = None, batch_size: int = 64,
            shard_size: int = 2048, progress: bool = True,
            pool: Callable[[np.ndarray, int], np.ndarray] | str | TokenPCA | None = None
            ) -> TokenSet:
    """Tokens of ``images[indices]`` under ``backbone``, pooled to d, cached in ``cache_dir``.

    Parameters
    ----------
    images : an ImageSet (``name``, ``split``, ``source``, ``images``, ``labels``, ``classes``).
    backbone : a Backbone (``name``, ``image_size``, ``grid``, ``n_features``, ``describe()``,
        ``tokens(images) -> (k, s, F)``).
    cache_dir : folder of the cache (created). Only ``manifest.json``, ``shard-*.safetensors``
        and their temporaries are ever written or removed there.
    d : features per token after pooling, 1 ≤ d ≤ F; ``None`` keeps all F.
    indices : which images (default all), in this order; repeats allowed.
    batch_size : images per ``backbone.tokens`` call (batches never straddle shards, so a
        resumed run makes the same calls as an uninterrupted one).
    shard_size : images per shard file.
    progress : show a tqdm bar (images/s).
    pool : ``pool(tokens (k, s, F), d) -> (k, s, d)``; default adaptive average pooling
        (``torch.nn.functional.adaptive_avg_pool1d``). Its qualified name is part of the
        request: a cache made with another function is redone. ``"pca"``: a PCA
        (:class:`cvxattn.pca.TokenPCA`) fitted on the tokens of the first shard, saved as
        ``projection.safetensors``, applied to every shard. A :class:`~cvxattn.pca.TokenPCA`
        (a training cache's ``projection``): that PCA, its sha256 in the request.

    Returns the :class:`TokenSet` read back from the shards. A cache made for this request is
    read (finished shards verified by sha256, unfinished or corrupt ones recomputed); one made
    for another request is removed and redone, with a warning saying what differed.
    """
    _check_images(images)
    grid = _check_backbone(backbone)
    n_features = int(backbone.n_features)
    if d is not None and (not isinstance(d, Integral) or isinstance(d, bool)
                          or not 1 <= d <= n_features):
        raise ValueError(f"d: expected None or an integer in [1, {n_features}] "
                         f"(backbone.n_features), got {d!r}")
    d = n_features if d is None else int(d)
    indices = _check_indices(indices, len(images.labels))
    batch_size = check_integer(batch_size, "batch_size", 1)
    shard_size = check_integer(shard_size, "shard_size", 1)
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress: expected True or False, got {progress!r}")
    if pool is not None and not callable(pool) and pool != "pca":
        raise ValueError(f"pool: expected None, 'pca', a TokenPCA or a callable (tokens, d) -> "
                         f"(k, s, d), got {type(pool).__name__}")
    pool_fn = pool_features if pool is None else pool
    fits_pca = isinstance(pool, str)  # "pca": fitted here, on the first shard
    if isinstance(pool, TokenPCA):
        if pool.d != d or pool.mean.shape != (n_features,):
            raise ValueError(f"pool: expected a PCA from {n_features} features to d = {d}, got "
                             f"one from {pool.mean.shape[0]} to {pool.d}")
        pool_name = {"function": "pca", "projection_sha256": pool.sha256}
    elif fits_pca:
        pool_name = {"function": "pca", "fitted_on": "the first shard"}
    else:
        pool_name = "none" if d == n_features else (
            "cvxattn.backbones.pool_features" if pool is None
            else f"{getattr(pool, '__module__', '?')}.{getattr(pool, '__qualname__', repr(pool))}")
    root = Path(cache_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"cache_dir: expected a folder, got the file {str(root)!r}")
    root.mkdir(parents=True, exist_ok=True)

    request = _request(images, backbone, list(grid), d, pool_name, indices, shard_size)
    manifest = _read_manifest(root)
    if manifest is not None and manifest.get("request") != request:
        why = "; ".join(_differences(manifest.get("request"), request)[:5])
        log.warning("token cache %s redone: it was made for another request (%s)", root, why)
        _clear(root)
        manifest = None
    elif manifest is None and (root / MANIFEST).exists():
        log.warning("token cache %s redone: its manifest is unreadable or of another format",
                    root)
        _clear(root)
    for path in root.iterdir():  # temporaries of a write that was killed
        if path.is_file() and _is_temporary(path.name):
            path.unlink()

    n, s = len(indices), grid[0] * grid[1]
    starts = list(range(0, n, shard_size))
    done: dict[int, dict] = {}
    if manifest is not None:
        for entry in manifest["shards"]:
            i = entry.get("index")
            if isinstance(i, int) and 0 <= i < len(starts) and entry.get("file") == _shard_name(i):
                done[i] = entry
    kept = {}
    pixels = {i: _pixels_sha256(images, indices[start:start + shard_size])
              for i, start in enumerate(starts)}
    for i, entry in sorted(done.items()):
        if entry["pixels_sha256"] != pixels[i]:
            log.warning("token cache %s: the images of shard %s changed; recomputing", root,
                        entry["file"])
        elif _read_shard(root, entry) is None:
            log.warning("token cache %s: shard %s is missing or fails its sha256; recomputing",
                        root, entry["file"])
        else:
            kept[i] = entry
    projection = None
    if fits_pca:  # every shard depends on the PCA of the first: all or nothing is kept
        projection = _read_projection(root, (manifest or {}).get("projection"))
        if projection is None or 0 not in kept:
            projection, kept = None, {}
            (root / PROJECTION).unlink(missing_ok=True)
    if manifest is not None and len(kept) < len(starts):
        log.info("token cache %s: resuming, %d of %d shards kept", root, len(kept), len(starts))

    manifest = {"format": FORMAT, "request": request, "complete": False,
                "n": n, "s": s, "d": d, "grid": list(grid), "classes": list(images.classes),
                "n_shards": len(starts), "shards": [kept[i] for i in sorted(kept)],
                "environment": environment(packages=_PACKAGES, run=False)}
    if projection is not None:
        manifest["projection"] = {"file": PROJECTION, "sha256": projection.sha256}
        pool_fn = projection
    write_json(root / MANIFEST, manifest)

    labels = np.asarray(images.labels).astype(np.int64)
    todo = [i for i in range(len(starts)) if i not in kept]
    with tqdm(total=n, initial=n - sum(min(shard_size, n - starts[i]) for i in todo),
              unit="img", desc=f"tokens {images.name}/{images.split}", disable=not progress,
              smoothing=0.1) as bar:
        for i in todo:
            block = indices[starts[i]:starts[i] + shard_size]  # (k,)
            X = np.empty((len(block), s, d), np.float32)  # (k, s, d)
            means = np.empty((len(block), n_features), np.float32)  # (k, F)
            fitting = fits_pca and projection is None  # shard 0: keep its tokens, fit the PCA
            if fitting:
                full = np.empty((len(block), s, n_features), np.float32)  # (k, s, F)
                moments = Moments(n_features)
            for j in range(0, len(block), batch_size):
                batch = block[j:j + batch_size]
                tokens = np.asarray(backbone.tokens([images.images[t] for t in batch]))
                if tokens.shape != (len(batch), s, n_features):
                    raise ValueError(f"backbone: expected tokens of shape ({len(batch)}, {s}, "
                                     f"{n_features}), got {tokens.shape}")
                tokens = tokens.astype(np.float32, copy=False)  # (b, s, F)
                means[j:j + len(batch)] = tokens.mean(1, dtype=np.float64)
                bar.update(len(batch))
                if fitting:
                    full[j:j + len(batch)] = tokens
                    moments.add(tokens)
                    continue
                pooled = _pooled(tokens, pool_name, pool_fn, d)
                if pooled.shape != (len(batch), s, d):
                    raise ValueError(f"pool: expected pooled tokens of shape ({len(batch)}, "
                                     f"{s}, {d}), got {pooled.shape}")
                X[j:j + len(batch)] = pooled  # (b, s, d)
            if fitting:
                if not np.isfinite(moments.outer).all():
                    raise ValueError("backbone: expected finite tokens, got NaN or inf in "
                                     "shard 0")
                projection = pool_fn = TokenPCA.fit(moments, d)
                data = projection.to_bytes()
                write_atomic(root / PROJECTION, data)
                manifest["projection"] = {"file": PROJECTION, "sha256": _sha256(data)}
                for j in range(0, len(block), batch_size):
                    X[j:j + batch_size] = projection(full[j:j + batch_size])
                del full
            if not (np.isfinite(X).all() and np.isfinite(means).all()):
                raise ValueError(f"backbone: expected finite tokens, got NaN or inf in shard {i}")
            data = safetensors.numpy.save(
                {"tokens": X, "labels": np.ascontiguousarray(labels[block]),
                 "indices": np.ascontiguousarray(block), "features_mean": means},
                # one metadata key only: safetensors writes several in a random (hash) order
                # per process, and shards must be byte-identical across runs
                metadata={"format": FORMAT})
            write_atomic(root / _shard_name(i), data)
            kept[i] = {"index": i, "file": _shard_name(i), "start": starts[i],
                       "count": len(block), "bytes": len(data), "sha256": _sha256(data),
                       "pixels_sha256": pixels[i]}
            manifest["shards"] = [kept[k] for k in sorted(kept)]
            write_json(root / MANIFEST, manifest)
    manifest["complete"] = True
    write_json(root / MANIFEST, manifest)
    return load(root)


def _pooled(tokens: np.ndarray, pool_name, pool_fn, d: int) -> np.ndarray:
    """A batch's tokens (b, s, F) reduced to d features."""
    if pool_name == "none":
        return tokens
    if isinstance(pool_fn, TokenPCA):
        return pool_fn(tokens)
    return np.asarray(pool_fn(tokens, d))


def load(cache_dir: str | os.PathLike, verify: bool = True) -> TokenSet:
    """The :class:`TokenSet` of a complete cache written by :func:`extract`.

    ``verify`` checks every shard's sha256 against the manifest (a ValueError names the
    shard). Raises FileNotFoundError when there is no manifest, ValueError when the cache is
    incomplete or corrupt (run :func:`extract` again to resume or repair it).
    """
    root = Path(cache_dir)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"cache_dir: expected a token cache with {MANIFEST}, got "
                                f"{str(root)!r} without one")
    manifest = _read_manifest(root)
    if manifest is None:
        try:
            why = manifest_problem(json.loads((root / MANIFEST).read_text(encoding="utf-8")))
        except (OSError, ValueError, AttributeError):
            why = None
        raise ValueError(f"cache_dir: expected a {FORMAT} manifest, got "
                         + (f"one that fails its check ({why})" if why else "an unreadable one")
                         + f" in {str(root)!r} (run extract to redo the cache)")
    entries = manifest["shards"]
    if not manifest.get("complete") or len(entries) != manifest["n_shards"]:
        raise ValueError(f"cache_dir: expected a complete cache, got {len(entries)} of "
                         f"{manifest['n_shards']} shards in {str(root)!r} (run extract to "
                         "resume)")
    n, s, d = manifest["n"], manifest["s"], manifest["d"]
    F = manifest["request"]["backbone"]["n_features"]
    X = np.empty((n, s, d), np.float32)  # (n, s, d)
    means = np.empty((n, F), np.float32)  # (n, F)
    y = np.empty(n, np.int64)
    indices = np.empty(n, np.int64)
    for entry in entries:
        try:
            tensors = _read_shard(root, entry) if verify else \
                safetensors.numpy.load_file(str(root / entry["file"]))
        except Exception as error:  # (safetensors raises its own error type) a foreign file
            raise ValueError(f"cache_dir: shard {entry['file']} is not a safetensors file "
                             f"({type(error).__name__}: {error}); run extract to recompute "
                             "it") from None
        if tensors is None:
            raise ValueError(f"cache_dir: shard {entry['file']} is missing or fails its "
                             "sha256 (run extract to recompute it)")
        a, b = entry["start"], entry["start"] + entry["count"]
        want = {"tokens": ((b - a, s, d), "float32"), "labels": ((b - a,), "int64"),
                "indices": ((b - a,), "int64"), "features_mean": ((b - a, F), "float32")}
        got = {k: (tuple(tensors[k].shape), str(tensors[k].dtype)) if k in tensors else None
               for k in want}
        if got != want:
            raise ValueError(f"cache_dir: shard {entry['file']}: expected tensors of shapes "
                             f"and dtypes {want}, got {got} (run extract to recompute it)")
        X[a:b], y[a:b], indices[a:b] = tensors["tokens"], tensors["labels"], tensors["indices"]
        means[a:b] = tensors["features_mean"]
    if len(y) and not (0 <= y.min() and y.max() < len(manifest["classes"])):
        raise ValueError(f"cache_dir: expected labels in [0, {len(manifest['classes'])}), got "
                         f"[{y.min()}, {y.max()}] in {str(root)!r}")
    if not (np.isfinite(X.sum(dtype=np.float64)) and np.isfinite(means.sum(dtype=np.float64))):
        raise ValueError(f"cache_dir: expected finite tokens, got NaN or inf in {str(root)!r} "
                         "(run extract to redo the cache)")
    projection = None
    if "projection" in manifest:
        projection = _read_projection(root, manifest["projection"])
        if projection is None:
            raise ValueError(f"cache_dir: {PROJECTION} is missing, fails its sha256 or is not "
                             f"a PCA, in {str(root)!r} (run extract to redo the cache)")
    return TokenSet(X=X, y=y, indices=indices, features_mean=means, projection=projection,
                    classes=tuple(manifest["classes"]),
                    grid=tuple(manifest["grid"]), manifest=manifest)


def load_projection(cache_dir: str | os.PathLike) -> TokenPCA:
    """The PCA a cache made with ``pool="pca"`` fitted (to project other images with it);
    a ValueError when the cache has none or its file fails its sha256."""
    root = Path(cache_dir)
    manifest = _read_manifest(root)
    entry = None if manifest is None else manifest.get("projection")
    projection = _read_projection(root, entry)
    if projection is None:
        raise ValueError(f"cache_dir: expected a token cache made with pool='pca' and its "
                         f"{PROJECTION}, got {str(root)!r} without a valid one")
    return projection
