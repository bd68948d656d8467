"""HAM10000 loader: the real dataset's counts, the layout variants, and every error path on tiny copies."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import HAM_ROWS, damage_jpeg_middle, noise_image, write_image_rgb

from helpers.core.config import CLASS_NAMES
from helpers.core.errors import DataError
from helpers.data.ham10000 import MASK_FOLDER, METADATA_FILE, load_duplicate_pairs, load_ham10000
from helpers.data.validation import FRAME_COLUMNS, SkipReport, skip_report

REAL_COUNTS = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115}
HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"


@pytest.mark.real_data
def test_real_ham10000_loads_completely(ham_root: Path) -> None:
    start = time.perf_counter()
    frame = load_ham10000(ham_root)
    seconds = time.perf_counter() - start
    print(f"load_ham10000 (verify_images=True): {seconds:.2f} s for {len(frame)} images")
    assert seconds < 30
    assert len(frame) == 10_015
    assert frame["dx"].value_counts().to_dict() == REAL_COUNTS
    assert frame["lesion_id"].nunique() == 7_470
    assert frame["malignant"].sum() == 327 + 514 + 1113
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert frame["image_id"].is_monotonic_increasing and frame["image_id"].is_unique
    assert (frame["label"] == frame["dx"].map(CLASS_NAMES.index)).all()
    assert set(frame["source"]) == {"ham10000"}
    assert frame["image_path"].map(os.path.isfile).all()
    assert frame["mask_path"].map(lambda path: path is not None and os.path.isfile(path)).all()
    assert frame["age"].dtype == float and frame["age"].isna().sum() < 100
    assert len(skip_report(frame)) == 0


@pytest.mark.real_data
def test_real_duplicate_pairs(ham_root: Path) -> None:
    pairs = load_duplicate_pairs(ham_root)
    assert len(pairs) == 18
    ids = set(load_ham10000(ham_root, verify_images=False)["image_id"])
    assert all(a in ids and b in ids and not a.endswith(".jpg") for a, b in pairs)
    assert load_duplicate_pairs(ham_root / "splits" / "ham10000_newly_discovered_duplicates.csv") == pairs


def _write_metadata(root: Path, rows: list[tuple[str, ...]], header: str = HEADER) -> Path:
    lines = [header, *(",".join(row) for row in rows)]
    path = root / METADATA_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def make_ham_root(root: Path, layout: str = "official", rows: list[tuple[str, ...]] = HAM_ROWS) -> Path:
    """A tiny HAM10000 copy: metadata, 15x20 images split over the layout's folders, masks for all but one."""
    root.mkdir(parents=True, exist_ok=True)
    _write_metadata(root, rows)
    for number, row in enumerate(rows):
        image_id = row[1]
        folder = {
            "official": root / f"HAM10000_images_part_{1 + number % 2}",
            "images": root / "images",
            "flat": root,
        }[layout]
        image = noise_image(number, (15, 20))
        write_image_rgb(folder / f"{image_id}.jpg", image)
        if number:
            write_image_rgb(root / MASK_FOLDER / f"{image_id}_segmentation.png", image[..., 0])
    return root


@pytest.fixture
def ham_copy(tmp_path: Path) -> Path:
    return make_ham_root(tmp_path / "HAM10000")


@pytest.mark.parametrize("layout", ["official", "images", "flat"])
def test_layouts_load_with_schema(tmp_path: Path, layout: str) -> None:
    frame = load_ham10000(make_ham_root(tmp_path / layout, layout))
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert frame["image_id"].tolist() == sorted(row[1] for row in HAM_ROWS)
    assert frame["image_path"].map(os.path.isfile).all()
    assert frame["dx"].tolist() == [row[2] for row in HAM_ROWS]
    assert frame["label"].tolist() == [CLASS_NAMES.index(row[2]) for row in HAM_ROWS]
    assert frame["malignant"].tolist() == [0, 0, 1, 1, 0, 0]
    assert np.isnan(frame.loc[2, "age"]) and frame.loc[0, "age"] == 45.0
    assert frame.loc[0, "mask_path"] is None
    assert frame["mask_path"].iloc[1:].map(os.path.isfile).all()


def test_masks_can_be_left_out(ham_copy: Path) -> None:
    assert load_ham10000(ham_copy, include_masks=False)["mask_path"].isna().all()


def test_missing_root_and_csv(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        load_ham10000(tmp_path / "absent")
    with pytest.raises(DataError, match=f"No {METADATA_FILE}") as error:
        load_ham10000(tmp_path)
    assert "Fix:" in str(error.value)


def test_missing_column_names_it_and_the_header(ham_copy: Path) -> None:
    _write_metadata(ham_copy, [row[:2] + row[3:] for row in HAM_ROWS], header=HEADER.replace("dx,", ""))
    with pytest.raises(DataError, match="lacks column.s. dx") as error:
        load_ham10000(ham_copy)
    assert HEADER in str(error.value) and METADATA_FILE in str(error.value)


def test_unknown_label_lists_values_and_counts(ham_copy: Path) -> None:
    melanoma = [row[:2] + ("melanoma",) + row[3:] for row in HAM_ROWS[1:3]]
    rows = [HAM_ROWS[0], *melanoma]
    _write_metadata(ham_copy, rows)
    with pytest.raises(DataError, match="2 row.s. have an unknown dx") as error:
        load_ham10000(ham_copy)
    assert "'melanoma': 2 row(s)" in str(error.value) and METADATA_FILE in str(error.value)


def test_duplicate_image_id(ham_copy: Path) -> None:
    _write_metadata(ham_copy, [*HAM_ROWS, HAM_ROWS[3]])
    with pytest.raises(DataError, match="ISIC_0000004 .2 rows."):
        load_ham10000(ham_copy)


def test_blank_id_and_bad_age(ham_copy: Path) -> None:
    _write_metadata(ham_copy, [HAM_ROWS[0], ("HAM_9", "", "nv", "histo", "1", "male", "back")])
    with pytest.raises(DataError, match="blank image_id; CSV lines:\n  3"):
        load_ham10000(ham_copy)
    _write_metadata(ham_copy, [HAM_ROWS[0][:4] + ("forty",) + HAM_ROWS[0][5:]])
    with pytest.raises(DataError, match="non-numeric age:\n  'forty'"):
        load_ham10000(ham_copy)


def _break_files(root: Path) -> dict[str, str]:
    """Remove, truncate and corrupt three images; returns image_id -> expected reason."""
    part_1, part_2 = root / "HAM10000_images_part_1", root / "HAM10000_images_part_2"
    (part_1 / "ISIC_0000001.jpg").unlink()
    truncated = part_2 / "ISIC_0000002.jpg"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (part_1 / "ISIC_0000003.jpg").write_bytes(np.random.default_rng(1).bytes(500))
    return {"ISIC_0000001": "missing file", "ISIC_0000002": "truncated JPEG", "ISIC_0000003": "not an image"}


def test_bad_images_raise_one_error_listing_all(ham_copy: Path) -> None:
    expected = _break_files(ham_copy)
    with pytest.raises(DataError, match="3 of 6 images from HAM10000_metadata.csv") as error:
        load_ham10000(ham_copy)
    message = str(error.value)
    assert all(f"{image_id}: {reason}" in message for image_id, reason in expected.items())
    assert "on_error='skip'" in message


def test_skip_mode_reports_every_skipped_row(ham_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    expected = _break_files(ham_copy)
    with caplog.at_level(logging.WARNING):
        frame = load_ham10000(ham_copy, on_error="skip")
    assert "3 of 6 images" in caplog.text
    assert sorted(frame["image_id"]) == ["ISIC_0000004", "ISIC_0000005", "ISIC_0000006"]
    report = skip_report(frame).to_frame()
    assert report["image_id"].tolist() == list(expected)
    assert all(reason in got for reason, got in zip(expected.values(), report["reason"], strict=True))
    saved = skip_report(frame).write_csv(ham_copy / "skipped.csv")
    assert pd.read_csv(saved)["image_id"].tolist() == list(expected)


def test_existence_only_check_misses_damage_but_not_absence(ham_copy: Path) -> None:
    _break_files(ham_copy)
    frame = load_ham10000(ham_copy, verify_images=False, on_error="skip")
    assert skip_report(frame).to_frame()["reason"].tolist() == ["missing file"]


def test_decode_catches_corrupt_body(ham_copy: Path) -> None:
    path = ham_copy / "HAM10000_images_part_1" / "ISIC_0000005.jpg"
    data = path.read_bytes()
    path.write_bytes(data[:3] + b"\x00" * (len(data) - 5) + data[-2:])
    assert len(load_ham10000(ham_copy)) == 6
    with pytest.raises(DataError, match="ISIC_0000005: cannot be decoded"):
        load_ham10000(ham_copy, decode_images=True)


def test_decode_reports_damaged_jpeg_data_with_intact_ends(ham_copy: Path) -> None:
    path = ham_copy / "HAM10000_images_part_1" / "ISIC_0000005.jpg"
    damage_jpeg_middle(path, path, count=32)
    assert len(load_ham10000(ham_copy)) == 6  # the ends are intact
    frame = load_ham10000(ham_copy, decode_images=True, on_error="skip")
    assert "ISIC_0000005" not in frame["image_id"].tolist() and len(frame) == 5
    (skipped,) = skip_report(frame).rows
    assert skipped.image_id == "ISIC_0000005" and skipped.reason.startswith("damaged JPEG data (Corrupt JPEG")


def test_spaces_around_header_names_are_ignored_on_either_side(ham_copy: Path) -> None:
    header = ",".join(
        f" {name}" if index % 2 else f"{name}  " for index, name in enumerate(HEADER.split(","))
    )
    _write_metadata(ham_copy, HAM_ROWS, header=header)
    assert load_ham10000(ham_copy)["image_id"].tolist() == [row[1] for row in HAM_ROWS]


def test_header_only_csv_says_it_has_no_rows(ham_copy: Path) -> None:
    _write_metadata(ham_copy, [])
    with pytest.raises(DataError, match="The CSV has a header but no rows: it lists no images") as error:
        load_ham10000(ham_copy)
    assert f"File: {ham_copy / METADATA_FILE}" in str(error.value)


def test_many_problems_are_summarised(tmp_path: Path) -> None:
    root = make_ham_root(tmp_path / "HAM10000")
    rows = [(f"HAM_{n}", f"ISIC_9{n:06d}", "nv", "histo", "1", "male", "back") for n in range(25)]
    _write_metadata(root, [*HAM_ROWS, *rows])
    with pytest.raises(DataError, match="25 of 31 images") as error:
        load_ham10000(root)
    assert "... and 15 more" in str(error.value)


def test_empty_image_folders(tmp_path: Path) -> None:
    root = tmp_path / "HAM10000"
    (root / "HAM10000_images_part_1").mkdir(parents=True)
    _write_metadata(root, HAM_ROWS)
    with pytest.raises(DataError, match="None of the listed images"):
        load_ham10000(root)


def test_bad_on_error_value(ham_copy: Path) -> None:
    with pytest.raises(ValueError, match="on_error"):
        load_ham10000(ham_copy, on_error="ignore")  # type: ignore[arg-type]


def test_duplicate_pairs_strip_suffix(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("similarity,from_img,to_img\n0.98,ISIC_1.jpg,ISIC_2.jpg\n")
    assert load_duplicate_pairs(path) == [("ISIC_1", "ISIC_2")]
    path.write_text("similarity,a,b\n")
    with pytest.raises(DataError, match="from_img"):
        load_duplicate_pairs(path)


def test_skip_report_of_clean_frame_is_empty(ham_copy: Path) -> None:
    assert skip_report(load_ham10000(ham_copy)) == SkipReport()
