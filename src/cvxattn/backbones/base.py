"""The Backbone protocol, image validation and preprocessing, and feature pooling.

A backbone maps images to the tokens of its final feature map: (n, s, D) with s = h·w tokens in
row-major order over the (h, w) grid and D features per token. Everything that determines the
tokens is reported by ``describe()``, so a token cache can be keyed on it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Sequence
from numbers import Integral
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Backbone",
    "as_images",
    "file_sha256",
    "package_versions",
    "pool_features",
    "preprocess",
]


@runtime_checkable
class Backbone(Protocol):
    """A frozen, pre-trained token extractor.

    Attributes
    ----------
    name : e.g. ``"efficientnet-lite0"``.
    image_size : side of the square network input, e.g. 224.
    grid : (h, w) of the final feature map, e.g. (7, 7) = (image_size / 32,) * 2.
    n_features : D, features per token, e.g. 1280.
    """

    name: str
    image_size: int
    grid: tuple[int, int]
    n_features: int

    def describe(self) -> dict:
        """Everything that determines the tokens: name, image size, preprocessing, weights
        sha256, runtime and package versions (JSON-serializable)."""
        ...

    def tokens(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """images: each (H, W) grey or (H, W, 3) RGB uint8 → float32 (n, h·w, n_features)."""
        ...


def pool_features(tokens: np.ndarray, d: int) -> np.ndarray:
    """Average-pool the features of every token into d bins: (n, s, D) → (n, s, d).

    Bin i averages features ⌊i·D/d⌋ ≤ k < ⌈(i+1)·D/d⌉, the bins of
    ``torch.nn.functional.adaptive_avg_pool1d`` (they overlap when d does not divide D).

    >>> import numpy as np
    >>> pool_features(np.arange(6.0).reshape(1, 1, 6), 3)
    array([[[0.5, 2.5, 4.5]]])
    >>> pool_features(np.arange(5.0).reshape(1, 1, 5), 2)   # bins [0, 3) and [2, 5)
    array([[[1., 3.]]])
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 3:
        raise ValueError(f"tokens: expected a 3-D array (n, s, D), got shape {tokens.shape}")
    if tokens.dtype.kind not in "fiu":
        raise ValueError(f"tokens: expected real numbers, got dtype {tokens.dtype}")
    D = tokens.shape[2]
    if not isinstance(d, Integral) or isinstance(d, bool) or not 1 <= d <= D:
        raise ValueError(f"d: expected an integer in [1, {D}] (the tokens' D), got {d!r}")
    d = int(d)
    dtype = tokens.dtype if tokens.dtype.kind == "f" else np.float64
    i = np.arange(d)
    start = (i * D) // d                                        # ⌊i·D/d⌋        (d,)
    end = -((-(i + 1) * D) // d)                                # ⌈(i+1)·D/d⌉    (d,)
    # prefix sums in float64: bin sums are differences of two prefix sums
    cumsum = np.zeros((*tokens.shape[:2], D + 1))               # (n, s, D + 1)
    np.cumsum(tokens, axis=2, dtype=np.float64, out=cumsum[:, :, 1:])
    pooled = (cumsum[:, :, end] - cumsum[:, :, start]) / (end - start)   # (n, s, d)
    return pooled.astype(dtype, copy=False)


def as_images(images, name: str = "images") -> list[np.ndarray]:
    """Validate a sequence of uint8 images, each (H, W) grey or (H, W, 3) RGB.

    Returns a list of (H, W, 3) uint8 arrays (grey repeated to 3 channels, (H, W, 1) accepted
    as grey). A single 4-D array (n, H, W, 3) is a sequence of n images.
    """
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise TypeError(f"{name}: expected a sequence of images (wrap a single image in a "
                        f"list), got one array of shape {images.shape}")
    if isinstance(images, (str, bytes)) or not isinstance(images, (Sequence, np.ndarray)):
        raise TypeError(f"{name}: expected a sequence of (H, W) or (H, W, 3) uint8 arrays, "
                        f"got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError(f"{name}: expected at least one image, got an empty sequence")
    out = []
    for k, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"{name}[{k}]: expected dtype uint8 (0..255), got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)       # grey → (H, W, 3)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name}[{k}]: expected shape (H, W) grey or (H, W, 3) RGB, got "
                             f"shape {image.shape}")
        if min(image.shape[:2]) == 0:
            raise ValueError(f"{name}[{k}]: expected a non-empty image, got shape {image.shape}")
        out.append(image)
    return out


def preprocess(images: list[np.ndarray], image_size: int, crop_fraction: float,
               mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Center crop, resize and normalize validated images: → float32 (n, 3, S, S), S = image_size.

    Each image is cropped to the central square of side ``crop_fraction · min(H, W)`` (sub-pixel
    box), resized to S × S with PIL's bicubic filter, scaled to [0, 1] and normalized per channel:
    x = (pixel / 255 - mean) / std.
    """
    from PIL import Image

    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    batch = np.empty((len(images), 3, image_size, image_size), dtype=np.float32)
    for k, image in enumerate(images):
        H, W = image.shape[:2]
        side = crop_fraction * min(H, W)
        left, top = (W - side) / 2, (H - side) / 2
        resized = Image.fromarray(image).resize((image_size, image_size), Image.BICUBIC,
                                                box=(left, top, left + side, top + side))
        x = np.asarray(resized, dtype=np.float32) / 255.0              # (S, S, 3)
        batch[k] = ((x - mean) / std).transpose(2, 0, 1)               # (3, S, S)
    return batch


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions(*names: str) -> dict[str, str | None]:
    """Installed versions of the named distributions (None when not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
