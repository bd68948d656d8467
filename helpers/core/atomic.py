"""Atomic file writes: write to a temporary file (or build a folder) beside the target, then rename it.

A crash or interrupt mid-write therefore never leaves a half-written checkpoint, figure, table or dataset. A
killed process may leave its hidden temporary; the name carries the process id, so that
:func:`remove_stale_temporaries` can tell such leftovers from writes in progress.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_TEMPORARY_NAME = re.compile(r"\..+\.tmp(?P<pid>\d+)-")


def _temporary_prefix(target: Path) -> str:
    """The hidden name prefix of a temporary beside ``target``: its name, then this process's id."""
    return f".{target.name}.tmp{os.getpid()}-"


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
        prefix=_temporary_prefix(target),
        suffix=suffix if suffix is not None else target.suffix,
        dir=target.parent,
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
    staging = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), suffix=".staging", dir=target.parent))
    staging.chmod(0o777 & ~_current_umask())  # mkdtemp makes 0700 folders; shared data must be readable
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries in ``folder`` that atomic writes of processes no longer running left behind
    (a killed export, say), keeping those of writes in progress; return what was deleted."""
    folder = Path(folder)
    stale = []
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _TEMPORARY_NAME.match(path.name)
        if match and not _process_runs(int(match["pid"])):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            stale.append(path)
    return stale


def _process_runs(pid: int) -> bool:
    """Whether a process with this id runs on this machine (of any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
