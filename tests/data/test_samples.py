import importlib.util
import re
import sys

import numpy as np
import pytest

from cvxattn.data import load_samples
from cvxattn.data.samples import SAMPLE_DATASETS, samples_folder

HAS_FOOLBOX = importlib.util.find_spec("foolbox") is not None

pytestmark = pytest.mark.skipif(not HAS_FOOLBOX, reason="foolbox==3.3.4 not installed")

SHAPES = {"imagenet": None, "cifar10": (32, 32, 3), "cifar100": (32, 32, 3),
          "mnist": (28, 28), "fashion-mnist": (28, 28)}
N_CLASSES = {"imagenet": 1000, "cifar10": 10, "cifar100": 100, "mnist": 10,
             "fashion-mnist": 10}


@pytest.mark.parametrize("dataset", list(SAMPLE_DATASETS))
def test_samples_match_file_names(dataset):
    imported_before = "foolbox" in sys.modules
    data = load_samples(dataset)
    assert ("foolbox" in sys.modules) == imported_before  # located, never imported
    prefix = SAMPLE_DATASETS[dataset][0]
    names = sorted(p.name for p in samples_folder().iterdir()
                   if re.fullmatch(rf"{prefix}_\d+_\d+\.(png|jpg)", p.name))
    assert len(data) == 20 and len(names) == 20
    expected = [int(name.split(".")[0].split("_")[2]) for name in names]   # sorted by index
    assert data.labels.tolist() == expected
    assert (data.name, data.split) == (f"foolbox-{dataset}", "samples")
    assert len(data.classes) == N_CLASSES[dataset]
    if SHAPES[dataset] is None:
        assert all(image.ndim == 3 and image.shape[2] == 3 for image in data.images)
    else:
        assert data.images.shape == (20, *SHAPES[dataset]) and data.images.dtype == np.uint8
    part = data.subset([19, 0])
    assert part.labels.tolist() == [expected[19], expected[0]]
    np.testing.assert_array_equal(part.images[1], data.images[0])


def test_known_labels_and_class_names():
    assert load_samples("imagenet").labels[:3].tolist() == [243, 559, 438]
    data = load_samples("cifar10")
    assert [data.classes[y] for y in data.labels[:4]] == ["cat", "ship", "ship", "airplane"]
    assert load_samples("mnist").labels[:4].tolist() == [7, 2, 1, 0]


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset: expected one of 'imagenet', 'cifar10', "
                                         "'cifar100', 'mnist', 'fashion-mnist', got 'svhn'"):
        load_samples("svhn")
