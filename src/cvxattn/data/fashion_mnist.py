"""Fashion-MNIST from its IDX files (gzipped or not); never downloads.

IDX layout (big-endian): two zero bytes, a type byte (0x08 = uint8), the number of dimensions
k, then k uint32 sizes, then the prod(sizes) values. Images are ``idx3`` (n, 28, 28), labels
``idx1`` (n,). The Debian package ``dataset-fashion-mnist`` installs the four files in
``/usr/share/datasets/fashion-mnist/``.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .base import ImageSet, check_choice, check_directory

__all__ = ["DEFAULT_ROOT", "FASHION_MNIST_CLASSES", "load_fashion_mnist", "read_idx"]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
_PREFIX = {"train": "train", "test": "t10k"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file with ``ndim`` dimensions (gzip detected by its magic).

    Raises ValueError naming the file when the magic number, the header or the size is wrong.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise ValueError(f"{path}: expected a complete gzip file, got a corrupt or truncated "
                             f"one ({error})") from None
    expected_magic = bytes([0, 0, 0x08, ndim])
    if raw[:4] != expected_magic:
        raise ValueError(f"{path}: expected IDX magic number 0x{expected_magic.hex()} (uint8, "
                         f"{ndim}-D), got 0x{raw[:4].hex()}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: expected a {header}-byte IDX header, got a {len(raw)}-byte "
                         "file")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != size:
        problem = "truncated" if len(raw) < size else "has trailing bytes"
        raise ValueError(f"{path}: expected {size} bytes for shape {shape} from the IDX header, "
                         f"got {len(raw)} (file {problem})")
    # a writable copy: torch.from_numpy warns on read-only buffers
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    found = sorted(p.name for p in root.iterdir())
    raise ValueError(f"root: expected {stem} or {stem}.gz in {root}, got files {found}")


def load_fashion_mnist(split: str = "train", root=None) -> ImageSet:
    """Fashion-MNIST ``split`` ("train": 60,000 images, "test": 10,000) from IDX files.

    ``root`` holds ``train-images-idx3-ubyte(.gz)``, ``train-labels-idx1-ubyte(.gz)`` and the
    ``t10k-…`` pair; default ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``). Images (n, 28, 28) uint8, labels (n,) in [0, 10).

    >>> data = load_fashion_mnist("test")                         # doctest: +SKIP
    >>> data.images.shape, data.classes[data.labels[0]]           # doctest: +SKIP
    ((10000, 28, 28), 'Ankle boot')
    """
    prefix = _PREFIX[check_choice(split, "split", tuple(_PREFIX))]
    if root is None and not DEFAULT_ROOT.is_dir():
        raise ValueError(f"root: expected Fashion-MNIST IDX files in {DEFAULT_ROOT} (apt-get "
                         "install dataset-fashion-mnist) or a folder you name, found nothing")
    root = check_directory(DEFAULT_ROOT if root is None else root, "root")
    images_path = _find(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, 3)                                  # (n, H, W)
    labels = read_idx(labels_path, 1)                                  # (n,)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: expected images of 28×28 pixels, got "
                         f"{images.shape[1]}×{images.shape[2]}")
    if len(labels) != len(images):
        raise ValueError(f"{labels_path}: expected {len(images)} labels to match "
                         f"{images_path.name}, got {len(labels)}")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{labels_path}: expected labels in [0, 10), got values up to "
                         f"{labels.max()}")
    return ImageSet("fashion-mnist", split, images, labels.astype(np.int64),
                    FASHION_MNIST_CLASSES, str(root))
