"""Image folders: ``root/CLASS_NAME/*.png|jpg|jpeg``, one sub-folder per class, read with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ImageSet, check_directory

__all__ = ["IMAGE_SUFFIXES", "load_image_folder", "read_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GREY_MODES = ("1", "L", "LA", "La", "I", "F")


def read_image(path) -> np.ndarray:
    """The pixels of one image file: (H, W) uint8 if stored grey, else (H, W, 3) uint8 RGB.

    Grey modes (1, L, LA, I, I;16, F) stay grey, 16-bit grey keeps its 8 high bits; every other
    mode (RGB, RGBA, P, CMYK, YCbCr, ...) is converted to RGB. ValueError names the file when
    Pillow cannot decode it.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow: only needed for image files

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode.startswith("I;16"):
                pixels = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)  # (H, W)
            elif mode in _GREY_MODES:
                pixels = np.asarray(image.convert("L"))                             # (H, W)
            else:
                pixels = np.asarray(image.convert("RGB"))                           # (H, W, 3)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path}: expected an image Pillow can read, got "
                         f"{type(error).__name__}: {error}") from None
    return np.array(pixels, dtype=np.uint8)  # a writable copy


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def load_image_folder(root) -> ImageSet:
    """All images under ``root/CLASS_NAME/``, classes in sorted order, files sorted by name.

    Files must end in .png, .jpg or .jpeg (any case); hidden entries (".…") are skipped. Images
    keep their own size, so ``images`` is a list of (H, W) grey or (H, W, 3) RGB uint8 arrays.

    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = pathlib.Path(tmp)
    ...     for name in ("cat", "dog"):
    ...         (root / name).mkdir()
    ...         Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(root / name / "a.png")
    ...     data = load_image_folder(root)
    >>> data.classes, data.labels.tolist(), data.images[0].shape
    (('cat', 'dog'), [0, 1], (4, 5, 3))
    """
    root = check_directory(root, "root")
    entries = sorted(p for p in root.iterdir() if _visible(p))
    stray = [p.name for p in entries if not p.is_dir()]
    if stray:
        raise ValueError(f"root: expected only class folders in {root}, got files {stray}")
    if not entries:
        raise ValueError(f"root: expected class folders with images in {root}, got an empty "
                         "folder")
    images, labels = [], []
    for label, folder in enumerate(entries):
        files = sorted(p for p in folder.iterdir() if _visible(p))
        if not files:
            raise ValueError(f"root: expected images in class folder {folder}, got an empty "
                             "folder")
        for file in files:
            if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{file}: expected a {'/'.join(IMAGE_SUFFIXES)} image file, "
                                 f"got {'a folder' if file.is_dir() else 'another kind of file'}")
            images.append(read_image(file))
            labels.append(label)
    return ImageSet("folder", "all", images, np.array(labels, dtype=np.int64),
                    tuple(p.name for p in entries), str(root))
