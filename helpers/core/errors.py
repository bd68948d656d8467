"""Exception types that carry a clear, user-facing message naming the file and the fix."""

from __future__ import annotations

from pathlib import Path


class SkinLesionError(Exception):
    """Base class for every error this project raises on purpose."""


class DataError(SkinLesionError):
    """Bad dataset input: missing or corrupt file, wrong CSV columns, unknown label, empty folder."""

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None):
        parts = [message]
        if path is not None:
            parts.append(f"File: {path}")
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__("\n".join(parts))
        self.path = Path(path) if path is not None else None
        self.fix = fix


class CheckpointError(SkinLesionError):
    """A checkpoint that is missing, truncated, foreign, or made for another task or input size."""


class DownloadError(SkinLesionError):
    """A download that failed or did not verify; nothing half-written is left behind."""
