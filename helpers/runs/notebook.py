"""What every numbered notebook does the same way: name its outputs, and show and save its figures.

Interactive (JupyterLab) and headless (``skinlesion run``) runs name their outputs alike: after the run
configuration, which by default is the one ``skinlesion run`` picks for the data found (``ham10000``, or
``demo`` for the synthetic data), with ``demo_`` first on synthetic data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from helpers.data.source import data_scoped
from helpers.plots.style import show_and_save
from helpers.runs.params import DEMO_CONFIG, REAL_DATA_CONFIG


def run_label(config_name: str, is_demo: bool) -> str:
    """The name a run's outputs start with: ``config_name`` (empty: the default configuration's name for
    this data), prefixed with ``demo_`` on synthetic data."""
    return data_scoped(config_name or (DEMO_CONFIG if is_demo else REAL_DATA_CONFIG), is_demo)


def checkpoint_scope(label: str, metadatas: Sequence[Mapping[str, Any]]) -> str:
    """``label``, followed by the names of the checkpoints adopted from elsewhere among those a run uses, so
    figures of foreign models never take (and overwrite) the names of the project's own."""
    adopted = [Path(metadata["checkpoint"]).stem for metadata in metadatas if "adopted_from" in metadata]
    return "_".join([label, *adopted])


def checkpoint_origins(metadatas: Sequence[Mapping[str, Any]]) -> str:
    """Where the checkpoints of a run come from, for its Tracking.md row: "project", or "adopted from X"."""
    origins = [
        f"adopted from {Path(metadata['adopted_from']['file']).name}"
        if "adopted_from" in metadata
        else "project"
        for metadata in metadatas
    ]
    return ", ".join(dict.fromkeys(origins))


class FigurePublisher:
    """Show a notebook's figures inline and save them as ``figures/{prefix}{name}.svg`` (stamped on synthetic
    data), remembering every saved path for the run's Tracking.md row."""

    def __init__(self, prefix: str, *, synthetic: bool, figures_dir: Path | None = None):
        self.prefix = prefix
        self.synthetic = synthetic
        self.figures_dir = figures_dir
        self.saved: list[Path] = []

    def __call__(self, figure: Figure, name: str) -> Path:
        """Show ``figure``, save it under the prefixed ``name`` and return the file."""
        path = show_and_save(
            figure, self.prefix + name, synthetic=self.synthetic, figures_dir=self.figures_dir
        )
        self.saved.append(path)
        return path
