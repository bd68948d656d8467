"""Localization scores on hand-made heatmaps/masks, mask loading, and the Gaussian baseline on real masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.core.errors import DataError
from helpers.explain import localization as loc

MASKS_FOLDER = "HAM10000_segmentations_lesion_tschandl"


def top_half_mask(shape: tuple[int, int] = (4, 6)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[: shape[0] // 2] = True
    return mask


def test_energy_inside_is_the_share_of_mass_in_the_mask() -> None:
    mask = top_half_mask()
    assert loc.energy_inside(np.ones(mask.shape), mask) == pytest.approx(0.5)
    heatmap = np.where(mask, 3.0, 1.0)
    assert loc.energy_inside(heatmap, mask) == pytest.approx(0.75)
    assert loc.energy_inside(heatmap, ~mask) == pytest.approx(0.25)
    assert np.isnan(loc.energy_inside(np.zeros(mask.shape), mask))


def test_energy_inside_rejects_mismatched_or_negative_maps() -> None:
    with pytest.raises(ValueError, match="same shape"):
        loc.energy_inside(np.ones((3, 3)), np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="non-negative"):
        loc.energy_inside(-np.ones((4, 6)), top_half_mask())


def test_pointing_game_checks_the_maximum_with_tolerance() -> None:
    mask = top_half_mask((10, 10))
    heatmap = np.zeros((10, 10))
    heatmap[1, 7] = 1.0
    assert loc.pointing_game(heatmap, mask)
    heatmap[8, 7] = 2.0  # peak 4 rows below the mask's last row (row 4)
    assert not loc.pointing_game(heatmap, mask)
    assert not loc.pointing_game(heatmap, mask, tolerance_px=3.9)
    assert loc.pointing_game(heatmap, mask, tolerance_px=4)
    assert not loc.pointing_game(heatmap, np.zeros((10, 10), bool), tolerance_px=100)


def test_centred_gaussian_peaks_in_the_middle() -> None:
    baseline = loc.centred_gaussian((9, 15), sigma=0.2)
    assert baseline.shape == (9, 15) and baseline.max() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(baseline), baseline.shape) == (4, 7)
    np.testing.assert_allclose(baseline, baseline[::-1, ::-1])
    assert baseline[4, 3] > baseline[0, 7]  # 4 px off-centre: sigma scales with the side, wider across
    assert loc.centred_gaussian((9, 15), sigma=0.5).sum() > baseline.sum()


def test_load_mask_reads_white_as_lesion_and_resizes_nearest(tmp_path: Path) -> None:
    pixels = np.zeros((6, 8), dtype=bool)
    pixels[:, :4] = True
    path = tmp_path / "mask.png"
    Image.fromarray(pixels).convert("1").save(path)
    mask = loc.load_mask(path)
    assert mask.dtype == bool and np.array_equal(mask, pixels)
    bigger = loc.load_mask(path, size=(12, 16))
    assert bigger.shape == (12, 16) and set(np.unique(bigger)) == {False, True}
    assert bigger[:, :8].all() and not bigger[:, 8:].any()


def test_load_mask_names_the_missing_or_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as missing:
        loc.load_mask(tmp_path / "absent.png")
    assert "absent.png" in str(missing.value)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    with pytest.raises(DataError, match="corrupt.png"):
        loc.load_mask(corrupt)


def test_score_and_table_aggregate_per_class_with_an_all_row() -> None:
    mask = top_half_mask((10, 10))
    inside, outside = np.where(mask, 1.0, 0.0), np.where(mask, 0.0, 1.0)
    records = [
        {"dx": "mel", **loc.score_localization(inside, mask)},
        {"dx": "mel", **loc.score_localization(outside, mask)},
        {"dx": "nv", **loc.score_localization(inside, mask)},
    ]
    assert records[0]["mask_area"] == pytest.approx(0.5)
    table = loc.localization_table(records)
    assert list(table.index) == ["mel", "nv", "all"]
    assert table.loc["mel", "n"] == 2 and table.loc["all", "n"] == 3 and table["n_empty_heatmaps"].sum() == 0
    assert table.loc["mel", "energy_inside"] == pytest.approx(0.5)
    assert table.loc["nv", "pointing_rate"] == pytest.approx(1.0)
    assert table.loc["all", "pointing_rate"] == pytest.approx(2 / 3)
    assert {"baseline_energy_inside", "baseline_pointing_rate", "mask_area"} <= set(table.columns)


def test_table_rejects_records_without_scores() -> None:
    with pytest.raises(ValueError, match="score_localization"):
        loc.localization_table(pd.DataFrame({"dx": ["mel"], "energy_inside": [0.5]}))


@pytest.mark.real_data
def test_gaussian_baseline_on_real_lesion_masks(ham_root: Path) -> None:
    paths = sorted((ham_root / MASKS_FOLDER).glob("ISIC_*_segmentation.png"))[:50]
    assert len(paths) == 50
    records = []
    for path in paths:
        mask = loc.load_mask(path, size=(150, 200))
        records.append({"dx": "all_masks", **loc.score_localization(np.zeros(mask.shape), mask)})
    table = loc.localization_table(records)
    baseline = table.loc["all"]
    print(
        f"\nGaussian baseline, {len(paths)} real masks: energy inside {baseline.baseline_energy_inside:.3f} "
        f"(mask area {baseline.mask_area:.3f}), pointing rate {baseline.baseline_pointing_rate:.2f}"
    )
    assert np.isnan(baseline.energy_inside) and baseline.n_empty_heatmaps == 50  # zero map: no mass
    assert baseline.baseline_energy_inside > baseline.mask_area + 0.1  # lesions are centred: beats chance
    assert baseline.baseline_pointing_rate > 0.8
