"""The image set every loader returns: images, integer labels, class names, provenance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ImageSet", "check_choice", "check_directory"]


@dataclass(frozen=True, eq=False, repr=False)
class ImageSet:
    """Images with labels in ``[0, len(classes))``, as read from one split of one source.

    Parameters
    ----------
    name : the data set ("fashion-mnist", "cifar100", "folder", "foolbox-imagenet", ...).
    split : the split ("train", "test", ...).
    images : n images, each (H, W) grey or (H, W, 3) RGB uint8; an ndarray (n, H, W[, 3]) when
        all images share one size, else a list.
    labels : (n,) int64 in [0, len(classes)).
    classes : the class names; label k is ``classes[k]``.
    source : the path (or package) the images were read from.

    Equality is identity (arrays make field-wise ``==`` ambiguous).

    >>> import numpy as np
    >>> images = np.zeros((5, 2, 3), dtype=np.uint8)                 # (n, H, W)
    >>> data = ImageSet("toy", "train", images, np.array([0, 1, 0, 1, 1]), ("a", "b"), "memory")
    >>> len(data), data.subset([1, 3]).labels.tolist(), data.subset([1, 3]).images.shape
    (5, [1, 1], (2, 2, 3))
    """

    name: str
    split: str
    images: Sequence[np.ndarray]
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str

    def __post_init__(self):
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
            raise ValueError(f"labels: expected a 1-D integer array, got shape {labels.shape} "
                             f"and dtype {labels.dtype}")
        labels = labels.astype(np.int64)
        if len(self.images) != len(labels):
            raise ValueError(f"labels: expected one label per image ({len(self.images)}), got "
                             f"{len(labels)}")
        classes = tuple(str(c) for c in self.classes)
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"labels: expected values in [0, {len(classes)}), got values in "
                             f"[{labels.min()}, {labels.max()}]")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "classes", classes)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> ImageSet:
        """The images at ``indices`` (integers, or a boolean mask of length n), same metadata."""
        index = np.asarray(indices)
        n = len(self)
        if index.dtype == bool:
            if index.shape != (n,):
                raise ValueError(f"indices: expected a boolean mask of shape ({n},), got shape "
                                 f"{index.shape}")
            index = np.flatnonzero(index)
        elif index.size == 0:
            index = index.astype(np.int64).reshape(0)
        elif index.dtype.kind not in "iu" or index.ndim != 1:
            raise ValueError(f"indices: expected a 1-D array of integers or a boolean mask, got "
                             f"shape {index.shape} and dtype {index.dtype}")
        if index.size and (index.min() < -n or index.max() >= n):
            raise ValueError(f"indices: expected values in [-{n}, {n}), got values in "
                             f"[{index.min()}, {index.max()}]")
        if isinstance(self.images, np.ndarray):
            images = self.images[index]                                # (k, H, W[, 3])
        else:
            images = [self.images[i] for i in index.tolist()]
        return ImageSet(self.name, self.split, images, self.labels[index], self.classes,
                        self.source)

    def __repr__(self) -> str:
        kind = (f"images {self.images.shape}" if isinstance(self.images, np.ndarray)
                else "images of varying size")
        return (f"ImageSet(name={self.name!r}, split={self.split!r}, n={len(self)}, {kind}, "
                f"classes={len(self.classes)}, source={self.source!r})")


def check_choice(value, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a one-line ValueError."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got "
                         f"{value!r}")
    return value


def check_directory(path, name: str) -> Path:
    """``path`` as a Path if it is an existing directory, else a one-line ValueError (TypeError
    for something that is not a path)."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"{name}: expected a path to a directory, got {type(path).__name__}")
    path = Path(path)
    if not path.is_dir():
        found = "a file" if path.exists() else "nothing"
        raise ValueError(f"{name}: expected a directory, found {found} at {path}")
    return path
