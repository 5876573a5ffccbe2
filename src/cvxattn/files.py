"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_atomic", "check_folder"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success fsync it and rename it onto
    ``path`` (``os.replace``); on any error remove it and leave ``path`` as it was.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "model.bin"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_bytes(b"weights")
    >>> target.read_bytes()
    b'weights'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_folder(path: str | os.PathLike, name: str) -> Path:
    """``path`` as a Path if it is a folder this process can write in, or could create: else
    a one-line ValueError naming ``name``, so that a command fails before its work rather than
    after it. Nothing is left behind (the test writes and removes a temporary folder in the
    nearest existing one)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: expected a folder, got the file {str(path)!r}")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ValueError(f"{name}: expected a folder, got {str(path)!r} under the file "
                         f"{str(existing)!r}")
    try:
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as error:
        raise ValueError(f"{name}: expected a folder that can be written, got {str(path)!r} "
                         f"({error.strerror or error} in {str(existing)!r})") from None
    return path
