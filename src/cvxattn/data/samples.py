"""The 20 real sample images per data set that ship inside the PyPI package ``foolbox==3.3.4``.

Files ``foolbox/data/{prefix}_{index:02d}_{label}.{png|jpg}``: ImageNet (RGB JPEG, 512×512
but one 683×1024, so a list of images), CIFAR-10 and CIFAR-100 (32×32 RGB), MNIST and
Fashion-MNIST (28×28 grey; the first 20 images of its test split). The folder is found with
``importlib.util.find_spec`` so foolbox itself (and its heavy dependencies) is never imported;
``pip install foolbox==3.3.4 --no-deps`` is enough.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from .base import ImageSet, check_choice
from .cifar import CIFAR100_CLASSES
from .fashion_mnist import FASHION_MNIST_CLASSES
from .folder import read_image

__all__ = ["SAMPLE_DATASETS", "load_samples", "samples_folder"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
# dataset -> (file prefix, class names); ImageNet's 1000 classes are named by their numbers
SAMPLE_DATASETS = {
    "imagenet": ("imagenet", tuple(str(i) for i in range(1000))),
    "cifar10": ("cifar10", CIFAR10_CLASSES),
    "cifar100": ("cifar100", CIFAR100_CLASSES),
    "mnist": ("mnist", tuple(str(i) for i in range(10))),
    "fashion-mnist": ("fashionMNIST", FASHION_MNIST_CLASSES),
}


def samples_folder() -> Path:
    """``foolbox/data`` of the installed foolbox, located without importing foolbox."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("load_samples: expected the PyPI package foolbox==3.3.4 "
                                  "(pip install foolbox==3.3.4 --no-deps), found none")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data"
        if folder.is_dir():
            return folder
    raise ValueError(f"foolbox: expected a data folder in {list(spec.submodule_search_locations)}"
                     ", found none (install foolbox==3.3.4)")


def load_samples(dataset: str = "imagenet") -> ImageSet:
    """The sample images of ``dataset`` shipped with foolbox, labels read from the file names.

    ``dataset``: "imagenet", "cifar10", "cifar100", "mnist" or "fashion-mnist". Images in
    file-index order: an ndarray (20, H, W[, 3]) uint8 when all share one size (all but
    ImageNet), else a list; the name is ``"foolbox-" + dataset``.

    >>> data = load_samples("cifar100")                          # doctest: +SKIP
    >>> data.images.shape, data.labels[:3].tolist()              # doctest: +SKIP
    ((20, 32, 32, 3), [49, 33, 72])
    """
    prefix, classes = SAMPLE_DATASETS[check_choice(dataset, "dataset", tuple(SAMPLE_DATASETS))]
    folder = samples_folder()
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+)_(\d+)\.(png|jpe?g)")
    found = sorted((int(m[1]), int(m[2]), path) for path in folder.iterdir()
                   if (m := pattern.fullmatch(path.name)))
    if not found:
        raise ValueError(f"dataset: expected files {prefix}_INDEX_LABEL.png in {folder}, found "
                         "none")
    indices = [index for index, _, _ in found]
    if indices != list(range(len(found))):
        raise ValueError(f"{folder}: expected {prefix} files numbered 0..{len(found) - 1}, got "
                         f"{indices}")
    labels = np.array([label for _, label, _ in found], dtype=np.int64)
    if labels.max() >= len(classes):
        raise ValueError(f"{folder}: expected {prefix} labels in [0, {len(classes)}), got "
                         f"{labels.max()}")
    images = [read_image(path) for _, _, path in found]
    if len({image.shape for image in images}) == 1:
        images = np.stack(images)                                      # (n, H, W[, 3])
    return ImageSet(f"foolbox-{dataset}", "samples", images, labels, classes, str(folder))
