"""Append-only run log: one markdown table row in ``Tracking.md`` per notebook or benchmark run.

Rows are never edited: each append reads the file, adds one line and atomically replaces it, under a lock
so that concurrent runs never lose a row. Runs on the synthetic demo data go to the git-ignored
``runs/Tracking-synthetic.md`` instead: a first ``skinlesion run`` on a fresh clone changes no tracked file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from helpers.core import config as project_config
from helpers.core.atomic import atomic_write_text
from helpers.core.provenance import git_commit

COLUMNS: tuple[str, ...] = (
    "date (UTC)",
    "config",
    "git commit",
    "notebook",
    "key parameters",
    "headline metrics",
    "outputs",
)
SYNTHETIC_MARKER = "SYNTHETIC"
"""Written first in the metrics cell of every run made on the synthetic demo data."""

INTRO = (
    "# Tracking\n\n"
    "One row per notebook run, appended by `helpers.runs.append_run` (never edit old rows).\n"
    "`+dirty` after a commit means the code differed from that commit. Rows whose metrics start with\n"
    f"`{SYNTHETIC_MARKER}` come from the synthetic demo data and say nothing about real performance.\n\n"
)


def append_run(
    *,
    config: str,
    notebook: str,
    params: Mapping[str, object],
    metrics: Mapping[str, object],
    outputs: Sequence[str | Path],
    synthetic: bool = False,
    path: Path | None = None,
) -> None:
    """Append one row describing a run to ``path`` (created with a header). By default real-data runs go to
    ``Tracking.md`` and ``synthetic=True`` runs (the demo data) to ``runs/Tracking-synthetic.md``; their
    metrics cell starts with SYNTHETIC, so they can never be mistaken for real results.
    """
    if path is None:
        path = project_config.SYNTHETIC_TRACKING_FILE if synthetic else project_config.TRACKING_FILE
    path = Path(path)
    metric_cells = ([SYNTHETIC_MARKER] if synthetic else []) + [
        _format_pair(k, v) for k, v in metrics.items()
    ]
    row = [
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
        config,
        git_commit(),
        notebook,
        ", ".join(_format_pair(k, v) for k, v in params.items()),
        ", ".join(metric_cells),
        ", ".join(_relative(Path(p), path.parent) for p in outputs),
    ]
    line = "| " + " | ".join(escape_cell(cell) for cell in row) + " |\n"
    with _locked(path.parent):
        old = path.read_text(encoding="utf-8") if path.exists() else _header()
        if old and not old.endswith("\n"):
            old += "\n"
        atomic_write_text(path, old + line)


def escape_cell(text: str) -> str:
    """Make ``text`` safe inside one markdown table cell (no pipes, no line breaks)."""
    return text.replace("|", "\\|").replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def _header() -> str:
    return INTRO + "| " + " | ".join(COLUMNS) + " |\n" + "|" + "---|" * len(COLUMNS) + "\n"


def _format_pair(key: str, value: object) -> str:
    if isinstance(value, float):
        return f"{key}={value:.4g}"
    return f"{key}={value}"


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive flock on the folder (the file itself is replaced on every write, so not lockable)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
