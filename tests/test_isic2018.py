"""ISIC 2018 Task 3 test-set loader on a generated seven-image copy (one image per class)."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import ISIC_HEADER, isic_truth_row, write_isic2018_test_set, write_isic_truth

from helpers.core.errors import DataError
from helpers.data.isic2018 import DX_COLUMNS, GROUND_TRUTH_FILE, load_isic2018_test
from helpers.data.validation import FRAME_COLUMNS, skip_report


@pytest.fixture
def isic_dir(tmp_path: Path) -> Path:
    """Seven 16x16 JPEGs ISIC_0034524.. with the ground truth CSV beside them, class i on image i."""
    return write_isic2018_test_set(tmp_path / "ISIC2018_Task3_Test_Input", range(len(DX_COLUMNS)))


def test_loads_with_csv_found_beside_images(isic_dir: Path) -> None:
    frame = load_isic2018_test(isic_dir)
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert frame["dx"].tolist() == list(DX_COLUMNS.values())
    assert frame["malignant"].tolist() == [1, 0, 1, 1, 0, 0, 0]
    assert (frame["lesion_id"] == frame["image_id"]).all()
    assert set(frame["source"]) == {"isic2018"}
    assert frame["mask_path"].isna().all()


def test_csv_elsewhere_by_path_or_folder(isic_dir: Path, tmp_path: Path) -> None:
    truth_dir = tmp_path / "ISIC2018_Task3_Test_GroundTruth"
    truth_dir.mkdir()
    csv_path = (isic_dir / GROUND_TRUTH_FILE).rename(truth_dir / GROUND_TRUTH_FILE)
    assert len(load_isic2018_test(isic_dir, csv_path)) == 7
    assert len(load_isic2018_test(isic_dir, truth_dir)) == 7
    with pytest.raises(DataError, match="found none"):
        load_isic2018_test(isic_dir)


def test_not_one_hot_rows_are_listed(isic_dir: Path) -> None:
    rows = [isic_truth_row("ISIC_0034524", (0, 1)), isic_truth_row("ISIC_0034525", ())]
    write_isic_truth(isic_dir / GROUND_TRUTH_FILE, rows)
    with pytest.raises(DataError, match="2 row.s. are not one-hot") as error:
        load_isic2018_test(isic_dir)
    assert "ISIC_0034524" in str(error.value) and "ISIC_0034525" in str(error.value)


def test_missing_class_column(isic_dir: Path) -> None:
    header = ISIC_HEADER.replace(",VASC", "")
    write_isic_truth(isic_dir / GROUND_TRUTH_FILE, ["ISIC_0034524,1,0,0,0,0,0"], header=header)
    with pytest.raises(DataError, match="lacks column.s. VASC"):
        load_isic2018_test(isic_dir)


def test_missing_image_raises_or_is_skipped(isic_dir: Path) -> None:
    (isic_dir / "ISIC_0034530.jpg").unlink()
    with pytest.raises(DataError, match="ISIC_0034530: missing file"):
        load_isic2018_test(isic_dir)
    frame = load_isic2018_test(isic_dir, on_error="skip")
    assert len(frame) == 6 and "vasc" not in set(frame["dx"])
    assert skip_report(frame).to_frame()["image_id"].tolist() == ["ISIC_0034530"]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image folder not found"):
        load_isic2018_test(tmp_path / "absent")


def test_header_only_ground_truth_says_it_has_no_rows(isic_dir: Path) -> None:
    write_isic_truth(isic_dir / GROUND_TRUTH_FILE, [])
    with pytest.raises(DataError, match="header but no rows"):
        load_isic2018_test(isic_dir)
