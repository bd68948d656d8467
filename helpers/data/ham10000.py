"""Load HAM10000 in its official layout (metadata CSV, image folders, optional masks) as the shared frame.

Accepts the Harvard Dataverse layout (``HAM10000_images_part_1/`` and ``_part_2/``) as well as the variants of
Kaggle copies (one ``images/`` folder, or images directly under the root). No image size is assumed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from helpers.core.config import HAM10000_METADATA_FILE as METADATA_FILE
from helpers.core.errors import DataError
from helpers.data.images import locate_images
from helpers.data.validation import (
    OnError,
    check_labels,
    conform_frame,
    numeric_column,
    read_checked_table,
    require_rows,
    validate_image_files,
)

logger = logging.getLogger(__name__)

METADATA_COLUMNS: tuple[str, ...] = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
IMAGE_FOLDERS: tuple[str, ...] = ("HAM10000_images_part_1", "HAM10000_images_part_2")
MASK_FOLDER = "HAM10000_segmentations_lesion_tschandl"
DUPLICATES_FILE = Path("splits") / "ham10000_newly_discovered_duplicates.csv"
"""The official layout: metadata CSV, image folders, lesion masks, and the near-duplicate list (optional)."""
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
"""The dataset's Harvard Dataverse identifier (where ``skinlesion download`` fetches it)."""
_DOWNLOAD_HINT = (
    f"Download HAM10000 from https://doi.org/{HAM10000_DOI.removeprefix('doi:')} and unpack it there"
)


def _check_root(root: Path) -> Path:
    """The metadata CSV of a HAM10000 root, or a DataError saying what is missing."""
    if not root.is_dir():
        raise DataError(
            "HAM10000 folder not found.", path=root, fix=f"{_DOWNLOAD_HINT}, or set SKINLESION_DATA."
        )
    csv_path = root / METADATA_FILE
    if not csv_path.is_file():
        found = ", ".join(sorted(entry.name for entry in root.iterdir())[:10]) or "nothing"
        raise DataError(
            f"No {METADATA_FILE} in the HAM10000 folder (found: {found}).",
            path=csv_path,
            fix=f"{_DOWNLOAD_HINT}: the folder must hold {METADATA_FILE} and the image folders.",
        )
    return csv_path


def _image_folders(root: Path) -> list[Path]:
    """Folders searched for images: every subfolder whose name contains "images", then the root itself."""
    subfolders = sorted(
        entry for entry in root.iterdir() if entry.is_dir() and "images" in entry.name.lower()
    )
    return [*subfolders, root]


def _mask_paths(root: Path, image_ids: pd.Series) -> list[str | None]:
    """Path of each image's ``<image_id>_segmentation.png`` lesion mask, None where there is none."""
    folder = root / MASK_FOLDER
    names = {entry.name for entry in os.scandir(folder)} if folder.is_dir() else set()
    masks = [f"{image_id}_segmentation.png" for image_id in image_ids]
    return [os.path.join(folder, name) if name in names else None for name in masks]


def _read_metadata(csv_path: Path) -> pd.DataFrame:
    """The metadata CSV, validated: all columns present, some rows, ids filled and unique, dx known, age
    numeric."""
    frame = read_checked_table(
        csv_path, METADATA_COLUMNS, filled=("lesion_id", "image_id", "dx"), unique="image_id"
    )
    require_rows(frame, csv_path)
    check_labels(frame, csv_path)
    frame["age"] = numeric_column(frame, "age", csv_path)
    return frame


def load_ham10000(
    root: str | Path,
    *,
    verify_images: bool = True,
    decode_images: bool = False,
    on_error: OnError = "raise",
    include_masks: bool = True,
) -> pd.DataFrame:
    """Load HAM10000 metadata and image paths as the shared frame (``source="ham10000"``), sorted by image_id.

    Every listed image must exist; ``verify_images`` also checks each file is a complete image (fast, reads
    only its ends) and ``decode_images`` decodes them all. Image problems raise one DataError, or with
    ``on_error="skip"`` drop those rows (see ``helpers.data.validation.skip_report``). CSV problems always
    raise.
    """
    root = Path(root).expanduser().resolve()
    csv_path = _check_root(root)
    frame = _read_metadata(csv_path)
    folders = _image_folders(root)
    frame["image_path"] = locate_images(frame["image_id"], folders)
    searched = ", ".join(f"{folder.name}/" for folder in folders)
    if not frame["image_path"].map(os.path.isfile).any():
        raise DataError(
            f"None of the listed images is in the HAM10000 folder (searched {searched}).",
            path=root,
            fix=f"{_DOWNLOAD_HINT}: put the images in HAM10000_images_part_1/ and HAM10000_images_part_2/.",
        )
    frame, report = validate_image_files(
        frame,
        verify_images=verify_images,
        decode=decode_images,
        on_error=on_error,
        origin=csv_path,
        fix=f"Restore the files (searched {searched} in {root}), or pass on_error='skip' to leave them out.",
    )
    if include_masks:
        frame["mask_path"] = pd.Series(_mask_paths(root, frame["image_id"]), index=frame.index, dtype=object)
    logger.info(
        "Loaded %d HAM10000 images of %d lesions from %s", len(frame), frame["lesion_id"].nunique(), root
    )
    return conform_frame(frame, "ham10000", report)


def load_duplicate_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Image-id pairs of near-duplicates with different lesion ids, from the CSV or a HAM10000 root (none
    when the root has no such list: it is an optional addition to the official layout).

    The CSV (columns similarity, from_img, to_img) names files; the ``.jpg`` suffixes are removed.
    """
    path = Path(path)
    csv_path = path / DUPLICATES_FILE if path.is_dir() else path
    if path.is_dir() and not csv_path.is_file():
        return []
    frame = read_checked_table(csv_path, ("similarity", "from_img", "to_img"), filled=("from_img", "to_img"))
    return [(Path(a).stem, Path(b).stem) for a, b in zip(frame["from_img"], frame["to_img"], strict=True)]
