"""Runs: executing the numbered notebooks headless with papermill (``runner``) from run configurations
(``params``), what every notebook does alike (``notebook``: output names, figures) and the Tracking.md log
(``tracking``). Imports every stage up to ``plots``."""

from helpers.runs.notebook import FigurePublisher, checkpoint_origins, checkpoint_scope, run_label
from helpers.runs.tracking import append_run

__all__ = ["FigurePublisher", "append_run", "checkpoint_origins", "checkpoint_scope", "run_label"]
