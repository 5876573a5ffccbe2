import numpy as np
import pytest

from cvxattn.data import ImageSet


def make_set(n=7, as_list=False):
    images = np.arange(n * 2 * 3, dtype=np.uint8).reshape(n, 2, 3)     # (n, H, W)
    labels = np.arange(n) % 3
    return ImageSet("toy", "train", list(images) if as_list else images, labels,
                    ("a", "b", "c"), "memory")


@pytest.mark.parametrize("as_list", [False, True])
def test_subset_keeps_metadata_and_picks_images(as_list):
    data = make_set(as_list=as_list)
    part = data.subset([5, 0, 2])
    assert len(part) == 3 and part.labels.tolist() == [2, 0, 2]
    assert (part.name, part.split, part.classes, part.source) == \
        (data.name, data.split, data.classes, data.source)
    np.testing.assert_array_equal(part.images[0], data.images[5])
    assert isinstance(part.images, np.ndarray) != as_list
    mask = data.labels == 1
    assert data.subset(mask).labels.tolist() == [1, 1]
    assert len(data.subset([])) == 0
    assert part.labels.dtype == np.int64


def test_subset_rejects_bad_indices():
    data = make_set()
    with pytest.raises(ValueError, match=r"indices: expected values in \[-7, 7\), got"):
        data.subset([7])
    with pytest.raises(ValueError, match=r"indices: expected a boolean mask of shape \(7,\)"):
        data.subset(np.ones(6, dtype=bool))
    with pytest.raises(ValueError, match="indices: expected a 1-D array of integers"):
        data.subset([0.5])


def test_labels_are_validated():
    images = np.zeros((3, 2, 2), np.uint8)
    with pytest.raises(ValueError, match=r"labels: expected values in \[0, 2\), got"):
        ImageSet("toy", "train", images, np.array([0, 1, 2]), ("a", "b"), "memory")
    with pytest.raises(ValueError, match=r"labels: expected one label per image \(3\), got 2"):
        ImageSet("toy", "train", images, np.array([0, 1]), ("a", "b"), "memory")
    assert "n=3" in repr(ImageSet("toy", "train", images, [0, 1, 1], ("a", "b"), "memory"))
