"""Score how well explanation heatmaps fall on the lesion, against binary lesion masks.

Two standard measures, energy inside the mask and the pointing game, each compared with a model-free
centred Gaussian baseline (lesions in dermoscopy are usually centred) and with chance (the mask area).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from helpers.core.errors import DataError

RECORD_COLUMNS = (
    "energy_inside",
    "pointing_hit",
    "baseline_energy_inside",
    "baseline_pointing_hit",
    "mask_area",
)
"""Per-image scores produced by :func:`score_localization` and aggregated by :func:`localization_table`."""


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a lesion mask PNG (lesion = white) as a bool (H, W) array, resized with nearest neighbour."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            "Lesion mask not found.", path=path, fix="Check the mask_path column or the masks folder."
        )
    try:
        with Image.open(path) as picture:
            mask = picture.convert("L")
            if size is not None and mask.size != (size[1], size[0]):
                mask = mask.resize((size[1], size[0]), Image.Resampling.NEAREST)
            return np.asarray(mask) > 127
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(
            f"Lesion mask is not a readable image ({error}).", path=path, fix="Re-download the masks."
        ) from error


def _checked_pair(heatmap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heat = np.asarray(heatmap, dtype=np.float64)
    region = np.asarray(mask, dtype=bool)
    if heat.shape != region.shape or heat.ndim != 2:
        raise ValueError(
            f"heatmap {heat.shape} and mask {region.shape} must be 2-D arrays of the same shape."
        )
    if np.any(heat < 0) or not np.all(np.isfinite(heat)):
        raise ValueError("heatmap must be finite and non-negative (Grad-CAM/saliency maps are in [0, 1]).")
    return heat, region


def energy_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's total mass that lies inside the mask (NaN for an all-zero heatmap)."""
    heat, region = _checked_pair(heatmap, mask)
    total = heat.sum()
    return float(heat[region].sum() / total) if total > 0 else float("nan")


def pointing_game(heatmap: np.ndarray, mask: np.ndarray, tolerance_px: float = 0) -> bool:
    """True when the heatmap's maximum lies inside the mask or within ``tolerance_px`` pixels of it."""
    heat, region = _checked_pair(heatmap, mask)
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    if region[row, col]:
        return True
    rows, cols = np.nonzero(region)
    return bool(rows.size and np.min((rows - row) ** 2 + (cols - col) ** 2) <= tolerance_px**2)


def centred_gaussian(shape: tuple[int, int], sigma: float = 0.25) -> np.ndarray:
    """Model-free baseline heatmap: a Gaussian at the image centre, peak 1, std ``sigma`` x height/width."""
    height, width = shape
    rows = (np.arange(height) - (height - 1) / 2) / (sigma * height)
    cols = (np.arange(width) - (width - 1) / 2) / (sigma * width)
    return np.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2)).astype(np.float32)


def score_localization(
    heatmap: np.ndarray, mask: np.ndarray, *, tolerance_px: float = 0, baseline_sigma: float = 0.25
) -> dict[str, float]:
    """One image's scores: energy inside and pointing hit, for the heatmap and the Gaussian baseline."""
    baseline = centred_gaussian(np.shape(mask), sigma=baseline_sigma)
    return {
        "energy_inside": energy_inside(heatmap, mask),
        "pointing_hit": float(pointing_game(heatmap, mask, tolerance_px)),
        "baseline_energy_inside": energy_inside(baseline, mask),
        "baseline_pointing_hit": float(pointing_game(baseline, mask, tolerance_px)),
        "mask_area": float(np.mean(mask)),
    }


def localization_table(records: pd.DataFrame | Iterable[Mapping], class_column: str = "dx") -> pd.DataFrame:
    """Per-class means of :func:`score_localization` records plus an ``all`` row; ``n`` counts images.

    Compare ``energy_inside`` with ``mask_area`` (what a uniform heatmap scores) and with the baseline.
    Energies of all-zero heatmaps are NaN and left out of the means; ``n_empty_heatmaps`` counts them.
    """
    frame = pd.DataFrame(records)
    missing = [column for column in (class_column, *RECORD_COLUMNS) if column not in frame.columns]
    if missing:
        raise ValueError(
            f"localization records lack columns {missing}; build them with score_localization()."
        )
    if frame.empty:
        raise ValueError("localization_table got no records.")
    frame = frame.assign(n=1, n_empty_heatmaps=frame["energy_inside"].isna().astype(int))
    counts, scores = ["n", "n_empty_heatmaps"], list(RECORD_COLUMNS)
    grouped = frame.groupby(class_column)
    table = grouped[counts].sum().join(grouped[scores].mean())
    overall = pd.concat([frame[counts].sum(), frame[scores].mean()]).to_frame("all").T
    table = pd.concat([table, overall.astype(table.dtypes.to_dict())])
    table.index.name = class_column
    return table.rename(
        columns={"pointing_hit": "pointing_rate", "baseline_pointing_hit": "baseline_pointing_rate"}
    )
