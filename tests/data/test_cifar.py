import importlib.util
import io
import os
import pickle
import struct
import tarfile
from typing import ClassVar

import numpy as np
import pytest

from cvxattn.data import CIFAR100_CLASSES, load_cifar100
from cvxattn.data.cifar import safe_unpickle

HAS_FOOLBOX = importlib.util.find_spec("foolbox") is not None


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote the official CIFAR files: every str and bytes
    object is a Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), NumPy under ``numpy.core``."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    """``obj`` pickled byte for byte the way the cifar-100-python files are."""
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


pytestmark = pytest.mark.skipif(not HAS_FOOLBOX, reason="foolbox==3.3.4 (sample images) absent")

COARSE = ("aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
          "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
          "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
          "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
          "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2")
N_TRAIN = 12  # of foolbox's 20 CIFAR-100 test images: 12 as "train", 8 as "test"


@pytest.fixture(scope="module")
def samples():
    from cvxattn.data import load_samples

    return load_samples("cifar100")


def batch(images, labels, name):
    """A dict exactly like the official train/test files (coarse labels are placeholders)."""
    n = len(images)
    data = images.transpose(0, 3, 1, 2).reshape(n, 3 * 32 * 32)       # (n, 3·32·32) channel-major
    return {b"filenames": [f"sample_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{name} batch".encode(),
            b"fine_labels": [int(y) for y in labels],
            b"coarse_labels": [int(y) // 5 for y in labels],
            b"data": np.ascontiguousarray(data)}


def official_files(samples, dump=py2_pickle, train=None, meta=None):
    images, labels = samples.images, samples.labels
    return {
        "train": dump(train if train is not None else
                      batch(images[:N_TRAIN], labels[:N_TRAIN], "training")),
        "test": dump(batch(images[N_TRAIN:], labels[N_TRAIN:], "testing")),
        "meta": dump(meta if meta is not None else
                     {b"fine_label_names": [c.encode() for c in CIFAR100_CLASSES],
                      b"coarse_label_names": [c.encode() for c in COARSE]}),
    }


def write_folder(root, files):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


def write_archive(path, files):
    with tarfile.open(path, "w:gz") as archive:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return path


def check(data, samples, split):
    part = slice(None, N_TRAIN) if split == "train" else slice(N_TRAIN, None)
    assert (data.name, data.split) == ("cifar100", split)
    assert data.images.shape == (len(samples.labels[part]), 32, 32, 3)
    assert data.images.dtype == np.uint8 and data.images.flags.c_contiguous
    np.testing.assert_array_equal(data.images, samples.images[part])
    np.testing.assert_array_equal(data.labels, samples.labels[part])
    assert data.classes == CIFAR100_CLASSES


def test_helper_writes_the_official_python2_format(samples):
    raw = official_files(samples)["train"]
    assert raw.startswith(b"\x80\x02}q\x00(U\tfilenames")             # protocol 2, py2 str keys
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"X" not in raw[:40]
    reference = pickle.loads(raw, encoding="bytes")                    # the official recipe
    assert reference[b"data"].shape == (N_TRAIN, 3072)


@pytest.mark.parametrize("split", ["train", "test"])
def test_archive_and_folders(tmp_path, samples, split):
    files = official_files(samples)
    archive = write_archive(tmp_path / "cifar-100-python.tar.gz", files)
    folder = write_folder(tmp_path / "extracted", files)
    check(load_cifar100(archive, split), samples, split)
    check(load_cifar100(folder, split), samples, split)
    check(load_cifar100(folder.parent, split), samples, split)
    assert load_cifar100(str(archive), split).source == str(archive)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python3_repickled_files(tmp_path, samples, protocol):
    files = official_files(samples, dump=lambda obj: pickle.dumps(obj, protocol=protocol))
    check(load_cifar100(write_folder(tmp_path, files), "test"), samples, "test")


class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("dump", [pickle.dumps, py2_pickle])
def test_malicious_pickle_is_refused(tmp_path, samples, dump):
    marker = tmp_path / "pwned"
    files = official_files(samples, dump=dump, train={b"data": SystemCall(marker)})
    archive = write_archive(tmp_path / "evil.tar.gz", files)
    with pytest.raises(ValueError, match=r"evil.tar.gz:cifar-100-python/train: refused to "
                                         r"unpickle global posix.system: expected only dicts"):
        load_cifar100(archive, "train")
    assert not marker.exists()


@pytest.mark.parametrize("obj,refused", [
    (eval, "global (__builtin__|builtins).eval"),
    (np.ma.masked_array([1, 2]), "global numpy.ma.core._mareconstruct"),
    (np.array([1, None], dtype=object), "object dtype object"),
    (np.memmap, "global numpy.memmap"),
])
def test_other_globals_are_refused(obj, refused):
    for protocol in (2, 5):
        with pytest.raises(ValueError, match=f"here: refused to unpickle {refused}"):
            safe_unpickle(io.BytesIO(pickle.dumps(obj, protocol=protocol)), "here")


def test_invalid_contents(tmp_path, samples):
    good = batch(samples.images[:3], samples.labels[:3], "training")
    cases = [
        ({**good, b"data": good[b"data"][:, :3000]},
         r"expected b'data' an \(n, 3072\) uint8 array, got shape \(3, 3000\)"),
        ({**good, b"data": good[b"data"].astype(np.int16)}, "dtype int16"),
        ({**good, b"fine_labels": [1, 2]},
         r"expected b'fine_labels' 3 integers, got shape \(2,\)"),
        ({**good, b"fine_labels": [1, 2, 100]},
         r"expected fine labels in \[0, 100\), got values in \[1, 100\]"),
        ([1, 2, 3], "expected a pickled dict, got list"),
    ]
    for i, (train, message) in enumerate(cases):
        folder = write_folder(tmp_path / str(i), official_files(samples, train=train))
        with pytest.raises(ValueError, match=message):
            load_cifar100(folder, "train")
    meta = {b"fine_label_names": [b"a"] * 99}
    folder = write_folder(tmp_path / "meta", official_files(samples, meta=meta))
    with pytest.raises(ValueError, match=r"\(meta\): expected b'fine_label_names' a list of 100"):
        load_cifar100(folder, "test")


def test_broken_and_missing_sources(tmp_path, samples):
    files = official_files(samples)
    archive = write_archive(tmp_path / "c.tar.gz", files)
    archive.write_bytes(archive.read_bytes()[:len(archive.read_bytes()) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_cifar100(archive, "train")
    folder = write_folder(tmp_path / "cut", files)
    (folder / "train").write_bytes(files["train"][:-50])
    with pytest.raises(ValueError, match="cut/cifar-100-python/train: expected a pickle in "
                                         "the cifar-100-python format, got an unreadable one"):
        load_cifar100(folder, "train")
    (folder / "meta").unlink()
    with pytest.raises(ValueError, match="path: expected meta or cifar-100-python/meta in"):
        load_cifar100(folder, "test")
    with pytest.raises(ValueError, match="path: expected the cifar-100-python.tar.gz archive"):
        load_cifar100(tmp_path / "absent", "test")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="path: expected a tar"):
        load_cifar100(tmp_path / "notes.txt", "test")
    with pytest.raises(ValueError, match="split: expected one of 'train', 'test', got 'meta'"):
        load_cifar100(folder, "meta")


def test_ndarray_cannot_be_called_directly():
    # REDUCE numpy.ndarray((3,), dtype) would build an array outside _reconstruct
    crafted = b"\x80\x02cnumpy\nndarray\nK\x03\x85\x85R."   # ndarray((3,))
    with pytest.raises(ValueError, match="here: expected a pickle in the cifar-100-python format"):
        safe_unpickle(io.BytesIO(crafted), "here")
