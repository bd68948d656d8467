"""Explanation figures: each image beside its heatmap overlays, the lesion mask outlined (notebook 05)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from helpers.data.images import read_image_rgb
from helpers.explain.examples import METHOD_LABELS
from helpers.explain.heatmaps import ExplainError, overlay
from helpers.explain.localization import load_mask

HEATMAP_CMAP = "jet"


def _mask_or_none(mask_path: object, shape: tuple[int, int]) -> np.ndarray | None:
    return load_mask(mask_path, shape) if isinstance(mask_path, str) and bool(mask_path) else None


def plot_examples(
    frame_rows: pd.DataFrame, heatmaps: Mapping[str, Sequence[np.ndarray]], *, title: str
) -> Figure:
    """One row per image: the original, then each method's overlay side by side; white: the lesion mask.

    ``frame_rows`` come from :func:`select_examples`; ``heatmaps`` map a method to one map per row.
    """
    if any(len(maps) != len(frame_rows) for maps in heatmaps.values()):
        raise ExplainError("plot_examples needs one heatmap per image for every method.")
    columns = 1 + len(heatmaps)
    figure, axes = plt.subplots(
        len(frame_rows),
        columns,
        figsize=(3.3 * columns, 2.9 * len(frame_rows)),
        squeeze=False,
        layout="constrained",
    )
    for index, (axes_row, row) in enumerate(zip(axes, frame_rows.itertuples(index=False), strict=True)):
        image = read_image_rgb(row.image_path)
        mask = _mask_or_none(row.mask_path, image.shape[:2])
        panels = [("original", image)]
        panels += [
            (METHOD_LABELS[m], overlay(image, maps[index], cmap=HEATMAP_CMAP)) for m, maps in heatmaps.items()
        ]
        for axis, (name, pixels) in zip(axes_row, panels, strict=True):
            axis.imshow(pixels)
            axis.grid(False)
            if mask is not None:
                axis.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.8)
            axis.set_title(name, fontsize=8)
            axis.set_xlabel("x (pixels)", fontsize=7)
            axis.set_ylabel("y (pixels)", fontsize=7)
            axis.tick_params(labelsize=6)
        axes_row[0].set_title(
            f"{row.image_id} ({row.outcome})\ntrue {row.true_class or '?'}, predicted {row.predicted_class} "
            f"p={row.confidence:.2f}",
            fontsize=8,
        )
    scale = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=HEATMAP_CMAP)
    figure.colorbar(scale, ax=axes, fraction=0.02, label="importance (0-1)")
    figure.suptitle(f"{title} (white outline: lesion mask)")
    return figure
