"""Explanations: Grad-CAM and gradient saliency for any Keras classifier (``heatmaps``), choosing and
explaining examples (``examples``) and scoring heatmaps against lesion masks (``localization``). Imports
``core``, ``data``, ``models`` and ``evaluation``."""

from helpers.explain.examples import (
    METHODS,
    explain_examples,
    has_masks,
    localization_summary,
    save_table,
    score_against_masks,
    select_examples,
    target_index,
)
from helpers.explain.heatmaps import find_last_conv_layer, gradcam, gradcam_batch, overlay, saliency_map

__all__ = [
    "METHODS",
    "explain_examples",
    "find_last_conv_layer",
    "has_masks",
    "gradcam",
    "gradcam_batch",
    "localization_summary",
    "overlay",
    "saliency_map",
    "save_table",
    "score_against_masks",
    "select_examples",
    "target_index",
]
