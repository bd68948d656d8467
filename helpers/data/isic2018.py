"""Load the ISIC 2018 Task 3 test set (ISIC_*.jpg images, one-hot ground-truth CSV) as the shared frame.

It is an external test set for HAM10000-trained models: the same seven diagnoses, other patients.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from helpers.core.errors import DataError
from helpers.data.images import locate_images
from helpers.data.validation import (
    OnError,
    conform_frame,
    format_listing,
    numeric_column,
    read_checked_table,
    require_rows,
    validate_image_files,
)

logger = logging.getLogger(__name__)

GROUND_TRUTH_FILE = "ISIC2018_Task3_Test_GroundTruth.csv"
DX_COLUMNS: dict[str, str] = {
    "MEL": "mel",
    "NV": "nv",
    "BCC": "bcc",
    "AKIEC": "akiec",
    "BKL": "bkl",
    "DF": "df",
    "VASC": "vasc",
}
"""Ground-truth CSV column -> our diagnosis name."""
CSV_COLUMNS: tuple[str, ...] = ("image", *DX_COLUMNS)
IMAGE_SUBFOLDERS: tuple[str, ...] = ("images", "ISIC2018_Task3_Test_Input")
"""Subfolders also searched for the images, so the folder holding both the CSV and them can be given."""


def find_ground_truth(folder: str | Path) -> Path:
    """The single ``*GroundTruth*.csv`` in a folder; DataError if there is none or more than one."""
    folder = Path(folder)
    found = sorted(folder.glob("*GroundTruth*.csv"))
    if len(found) != 1:
        names = ", ".join(path.name for path in found) or "none"
        raise DataError(
            f"Expected exactly one *GroundTruth*.csv in the folder, found {names}.",
            path=folder,
            fix=f"Pass ground_truth_csv explicitly (the official name is {GROUND_TRUTH_FILE}).",
        )
    return found[0]


def _diagnoses(frame: pd.DataFrame, csv_path: Path) -> pd.Series:
    """Our dx name for each row of the one-hot class columns; DataError listing rows not exactly one-hot."""
    values = pd.DataFrame({column: numeric_column(frame, column, csv_path) for column in DX_COLUMNS})
    one_hot = values.isin([0.0, 1.0]).all(axis=1) & (values.sum(axis=1) == 1)
    bad = frame.loc[~one_hot, "image"]
    if len(bad):
        raise DataError(
            f"{len(bad)} row(s) are not one-hot (exactly one 1, others 0):\n{format_listing(bad.tolist())}",
            path=csv_path,
            fix=f"Each row needs a single 1.0 among {', '.join(DX_COLUMNS)}; use the official ground truth.",
        )
    return values.idxmax(axis=1).map(DX_COLUMNS)


def load_isic2018_test(
    images_dir: str | Path,
    ground_truth_csv: str | Path | None = None,
    *,
    verify_images: bool = True,
    decode_images: bool = False,
    on_error: OnError = "raise",
) -> pd.DataFrame:
    """Load the ISIC 2018 Task 3 test images and labels as the shared frame (``source="isic2018"``).

    ``images_dir`` holds the images, or holds them in an ``images/`` (or ``ISIC2018_Task3_Test_Input/``)
    subfolder beside the CSV. ``ground_truth_csv`` may be the CSV, a folder holding it, or None to look in
    ``images_dir``.
    lesion_id equals image_id (the test set has no lesion ids). Image checks and ``on_error`` work as in
    :func:`helpers.data.ham10000.load_ham10000`.
    """
    images_dir = Path(images_dir).expanduser().resolve()
    if not images_dir.is_dir():
        raise DataError("ISIC 2018 image folder not found.", path=images_dir, fix="Check the path.")
    csv_path = Path(ground_truth_csv or images_dir)
    csv_path = find_ground_truth(csv_path) if csv_path.is_dir() else csv_path
    table = read_checked_table(csv_path, CSV_COLUMNS, filled=("image",), unique="image")
    require_rows(table, csv_path)
    frame = pd.DataFrame({"image_id": table["image"], "dx": _diagnoses(table, csv_path)})
    folders = [images_dir, *(images_dir / name for name in IMAGE_SUBFOLDERS if (images_dir / name).is_dir())]
    frame["image_path"] = locate_images(frame["image_id"], folders)
    frame, report = validate_image_files(
        frame, verify_images=verify_images, decode=decode_images, on_error=on_error, origin=csv_path
    )
    logger.info("Loaded %d ISIC 2018 test images from %s", len(frame), images_dir)
    return conform_frame(frame, "isic2018", report)
