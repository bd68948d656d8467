"""Figures, one module per notebook topic (``eda``, ``training``, ``evaluation``, ``explanations``), all in
the style of ``style``: titled, labelled, saved as SVG atomically. Imports every stage up to ``explain``."""

from helpers.plots.style import apply_style, save_figure, show_and_save

__all__ = ["apply_style", "save_figure", "show_and_save"]
