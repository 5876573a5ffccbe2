import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

from cvxattn.data import FASHION_MNIST_CLASSES, load_fashion_mnist
from cvxattn.data.fashion_mnist import DEFAULT_ROOT

HAS_FOOLBOX = importlib.util.find_spec("foolbox") is not None


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """An IDX file of a uint8 array: magic 0x0000 08 k, k big-endian sizes, the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_split(root, prefix="t10k", n=7, n_labels=None, gz=True, max_label=9, size=(28, 28)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, *size), dtype=np.uint8)
    labels = rng.integers(0, max_label + 1, size=n_labels or n, dtype=np.uint8)
    labels[0] = max_label
    suffix = ".gz" if gz else ""
    write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("split,prefix", [("train", "train"), ("test", "t10k")])
def test_round_trip(tmp_path, gz, split, prefix):
    images, labels = write_split(tmp_path, prefix, gz=gz)
    data = load_fashion_mnist(split, root=tmp_path)
    assert (data.name, data.split, data.source) == ("fashion-mnist", split, str(tmp_path))
    assert data.images.shape == (7, 28, 28) and data.images.dtype == np.uint8
    assert data.images.flags.writeable
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.labels.dtype == np.int64 and data.classes == FASHION_MNIST_CLASSES


def test_truncated_raw_file(tmp_path):
    write_split(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: expected 5504 bytes for "
                                         r"shape \(7, 28, 28\).*got 5494 \(file truncated\)"):
        load_fashion_mnist("test", root=tmp_path)


def test_truncated_gzip_file(tmp_path):
    write_split(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="idx3-ubyte.gz: expected a complete gzip file"):
        load_fashion_mnist("test", root=tmp_path)


def test_gzip_of_truncated_content(tmp_path):
    write_split(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-3]))
    with pytest.raises(ValueError, match=r"expected 15 bytes .* got 12 \(file truncated\)"):
        load_fashion_mnist("test", root=tmp_path)


def test_wrong_magic(tmp_path):
    write_split(tmp_path, gz=False)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + path.read_bytes()[4:])
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte: expected IDX magic number "
                                         r"0x00000801 \(uint8, 1-D\), got 0x00000803"):
        load_fashion_mnist("test", root=tmp_path)


def test_label_count_mismatch(tmp_path):
    write_split(tmp_path, n=7, n_labels=6)
    with pytest.raises(ValueError, match="labels-idx1-ubyte.gz: expected 7 labels to match "
                                         "t10k-images-idx3-ubyte.gz, got 6"):
        load_fashion_mnist("test", root=tmp_path)


def test_label_out_of_range(tmp_path):
    write_split(tmp_path, max_label=10)
    with pytest.raises(ValueError, match=r"expected labels in \[0, 10\), got values up to 10"):
        load_fashion_mnist("test", root=tmp_path)


def test_wrong_image_size(tmp_path):
    write_split(tmp_path, size=(28, 27))
    with pytest.raises(ValueError, match="expected images of 28×28 pixels, got 28×27"):
        load_fashion_mnist("test", root=tmp_path)


def test_missing_files_and_bad_arguments(tmp_path):
    write_split(tmp_path, prefix="train")
    with pytest.raises(ValueError, match="root: expected t10k-images-idx3-ubyte or "
                                         "t10k-images-idx3-ubyte.gz in"):
        load_fashion_mnist("test", root=tmp_path)
    with pytest.raises(ValueError, match="split: expected one of 'train', 'test', got 'val'"):
        load_fashion_mnist("val", root=tmp_path)
    with pytest.raises(ValueError, match="root: expected a directory, found nothing at"):
        load_fashion_mnist("train", root=tmp_path / "absent")


@pytest.mark.skipif(not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_debian_test_split():
    data = load_fashion_mnist("test")
    assert data.images.shape == (10000, 28, 28) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(data.labels, minlength=10), [1000] * 10)
    assert data.classes[data.labels[0]] == "Ankle boot"
    if HAS_FOOLBOX:  # foolbox's Fashion-MNIST samples are the first 20 test images
        from cvxattn.data import load_samples

        samples = load_samples("fashion-mnist")
        np.testing.assert_array_equal(samples.images, data.images[:20])
        np.testing.assert_array_equal(samples.labels, data.labels[:20])
