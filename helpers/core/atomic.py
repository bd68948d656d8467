"""Atomic file writes: write to a temporary file (or build a folder) beside the target, then rename it.

A crash or interrupt mid-write therefore never leaves a half-written checkpoint, figure, table or dataset.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``.

    ``suffix`` defaults to the target's own suffix so writers that infer the format from the
    extension (matplotlib, h5py, Keras) still work.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_current_umask())  # mkstemp makes 0600 files; give them the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


@contextlib.contextmanager
def staging_directory(target: str | Path) -> Iterator[Path]:
    """Yield a new empty hidden folder beside ``target`` to build it in (with the umask's usual permissions);
    it is always removed afterwards.

    Move the finished folder (or its content) onto ``target`` inside the ``with`` block: being on the same
    file system, the rename is atomic, and whatever is left (after a failure, or not moved) is deleted.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    staging.chmod(0o777 & ~_current_umask())  # mkdtemp makes 0700 folders; shared data must be readable
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
