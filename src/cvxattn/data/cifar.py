"""CIFAR-100 from the standard ``cifar-100-python`` archive or its extracted folder.

The official files ``train``, ``test`` and ``meta`` are Python 2 pickles (protocol 2) of dicts
with byte-string keys: ``b"data"`` an (n, 3072) uint8 array in channel-major order (1024 red,
1024 green, 1024 blue values per image, rows top to bottom), ``b"fine_labels"`` a list of n ints,
and in ``meta`` ``b"fine_label_names"`` a list of 100 byte strings.

Why a restricted unpickler: ``pickle.load`` calls any importable function a file names (a
pickle can run ``os.system``), so reading a downloaded archive with it trusts whoever made the
archive. The official format needs only pickle opcodes for dicts, lists, tuples, byte strings and
numbers, plus three NumPy globals to rebuild the data array: ``numpy.core.multiarray.
_reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``. :class:`SafeUnpickler` resolves exactly
those (and NumPy 2's ``numpy._core`` spelling, the protocol-5 ``_frombuffer``, and the
``_codecs.encode(text, "latin1")`` that Python 3 writes for bytes at protocol 2), refuses object
arrays, and refuses every other global with a ValueError naming it.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from .base import ImageSet, check_choice

__all__ = ["CIFAR100_CLASSES", "SafeUnpickler", "load_cifar100", "safe_unpickle"]

# the official meta file's fine_label_names, in label order
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm")

_ARCHIVE_FOLDER = "cifar-100-python"
_RECONSTRUCT = np.zeros(0).__reduce__()[0]        # numpy(._)core.multiarray._reconstruct
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]     # numpy(._)core.numeric._frombuffer


class _Refused(pickle.UnpicklingError):
    pass


class _NdarrayName:
    """What ``numpy.ndarray`` unpickles to: only an argument of ``_reconstruct``, so a pickle
    cannot call ``ndarray(shape, dtype, buffer, offset, strides)`` itself."""


_NDARRAY = _NdarrayName()


def _reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY:
        raise _Refused(f"array reconstruction of {cls!r}")
    return _RECONSTRUCT(np.ndarray, shape, typecode)


def _dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise _Refused(f"object dtype {dtype}")
    return dtype


def _frombuffer(buffer, dtype, shape, order):
    if np.dtype(dtype).hasobject:
        raise _Refused(f"object dtype {dtype}")
    return _FROMBUFFER(buffer, dtype, shape, order)


def _codecs_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _codecs_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that builds only containers, bytes, numbers and plain NumPy arrays."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise _Refused(f"global {module}.{name}") from None


def safe_unpickle(file, where: str):
    """Unpickle ``file`` (binary) with :class:`SafeUnpickler`; ValueError naming ``where``."""
    try:
        return SafeUnpickler(file, encoding="bytes").load()
    except _Refused as refused:
        raise ValueError(f"{where}: refused to unpickle {refused}: expected only dicts, lists, "
                         "bytes, numbers and NumPy arrays (the cifar-100-python format)") from None
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError) as error:
        raise ValueError(f"{where}: expected a pickle in the cifar-100-python format, got an "
                         f"unreadable one ({type(error).__name__}: {error})") from None


def _as_bytes_dict(obj, where: str) -> dict[bytes, object]:
    if not isinstance(obj, dict):
        # the file's contents, not an argument's type: ValueError like every format error
        got = type(obj).__name__
        raise ValueError(f"{where}: expected a pickled dict, got {got}")  # noqa: TRY004
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _read_member(path: Path, name: str):
    """Unpickle file ``name`` ("train", "test", "meta") from the archive or folder at path."""
    if path.is_dir():
        for candidate in (path / name, path / _ARCHIVE_FOLDER / name):
            if candidate.is_file():
                with open(candidate, "rb") as file:
                    return _as_bytes_dict(safe_unpickle(file, str(candidate)), str(candidate))
        raise ValueError(f"path: expected {name} or {_ARCHIVE_FOLDER}/{name} in {path}, got "
                         f"{sorted(p.name for p in path.iterdir())}")
    if not path.is_file():
        raise ValueError(f"path: expected the cifar-100-python.tar.gz archive or its extracted "
                         f"folder, found nothing at {path}")
    if not tarfile.is_tarfile(path):
        raise ValueError(f"path: expected a tar(.gz) archive or a folder, got the file {path}")
    try:
        with tarfile.open(path, "r:*") as archive:
            members = [m for m in archive.getmembers()
                       if m.isfile() and PurePosixPath(m.name).name == name]
            official = [m for m in members if m.name == f"{_ARCHIVE_FOLDER}/{name}"]
            if not (official or len(members) == 1):
                found = [m.name for m in members] or "no such file"
                raise ValueError(f"path: expected {_ARCHIVE_FOLDER}/{name} in {path}, got "
                                 f"{found}")
            member = (official or members)[0]
            where = f"{path}:{member.name}"
            file = archive.extractfile(member)
            return _as_bytes_dict(safe_unpickle(io.BufferedReader(file), where), where)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise ValueError(f"path: expected a complete tar(.gz) archive, got a corrupt or "
                         f"truncated one at {path} ({type(error).__name__}: {error})") from None


def load_cifar100(path, split: str = "train") -> ImageSet:
    """CIFAR-100 ``split`` ("train": 50,000, "test": 10,000) with its 100 fine labels.

    ``path``: the ``cifar-100-python.tar.gz`` archive, the extracted ``cifar-100-python``
    folder, or the folder holding it. Images (n, 32, 32, 3) uint8, labels (n,) in [0, 100).

    >>> data = load_cifar100("cifar-100-python.tar.gz", "test")   # doctest: +SKIP
    >>> data.images.shape, len(data.classes)                     # doctest: +SKIP
    ((10000, 32, 32, 3), 100)
    """
    check_choice(split, "split", ("train", "test"))
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path: expected a path to the archive or folder, got "
                         f"{type(path).__name__}")
    path = Path(path)
    batch = _read_member(path, split)
    meta = _read_member(path, "meta")
    where = f"{path} ({split})"

    data = batch.get(b"data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        got = (f"shape {data.shape} and dtype {data.dtype}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise ValueError(f"{where}: expected b'data' an (n, 3072) uint8 array, got {got}")
    n = data.shape[0]
    labels = batch.get(b"fine_labels")
    try:
        labels = np.asarray(labels)
    except (TypeError, ValueError):
        labels = np.asarray(None)
    if labels.shape != (n,) or (n and labels.dtype.kind not in "iu"):
        raise ValueError(f"{where}: expected b'fine_labels' {n} integers, got shape "
                         f"{labels.shape} and dtype {labels.dtype}")
    names = meta.get(b"fine_label_names")
    if not isinstance(names, (list, tuple)) or len(names) != 100 \
            or not all(isinstance(c, (bytes, str)) for c in names):
        raise ValueError(f"{path} (meta): expected b'fine_label_names' a list of 100 strings, "
                         f"got {type(names).__name__} of length "
                         f"{len(names) if hasattr(names, '__len__') else '?'}")
    classes = tuple(c.decode("utf-8") if isinstance(c, bytes) else c for c in names)
    if n and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"{where}: expected fine labels in [0, 100), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    # channel-major rows (n, 3·32·32) -> (n, 3, 32, 32) -> (n, 32, 32, 3)
    images = np.ascontiguousarray(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
    return ImageSet("cifar100", split, images, labels.astype(np.int64), classes, str(path))
