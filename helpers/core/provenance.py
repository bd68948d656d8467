"""Where a result came from: the code's git commit (with a dirty flag) and the library versions.

Checkpoint sidecars, Tracking.md rows and benchmark JSON all record this, so each can be traced to the code
that made it.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parents[2]
"""The checkout holding this code (not SKINLESION_ROOT, where a run writes): its commit names the code."""
GENERATED_PATHS: tuple[str, ...] = ("Tracking.md", "figures", "bench/results", "models/release")
"""Tracked outputs that runs rewrite: changes there do not make the *code* dirty."""


def git_commit() -> str:
    """Short commit of the code, ``+dirty`` if tracked code differs from it; ``unknown`` without git."""
    excluded = [f":!{path}" for path in GENERATED_PATHS]
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unknown"
    return commit + ("+dirty" if status else "")


def package_version(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=CODE_ROOT, capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.strip()
