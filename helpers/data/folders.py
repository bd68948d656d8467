"""Load a folder-per-class malignant-vs-benign image set (``root/{train,test}/{benign,malignant}/*.jpg``).

Such sets (e.g. the Kaggle "Skin Cancer: Malignant vs. Benign") often reuse HAM10000 images; with a
``ham10000_crossref.csv`` in the root, the frame says which, so the overlap can be removed before any
cross-dataset evaluation (:func:`drop_ham10000_overlap`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from helpers.core.config import BINARY_CLASS_NAMES
from helpers.core.errors import DataError
from helpers.data.images import IMAGE_SUFFIXES
from helpers.data.validation import (
    OnError,
    check_unique,
    conform_frame,
    read_checked_table,
    validate_image_files,
)

logger = logging.getLogger(__name__)

CROSSREF_FILE = "ham10000_crossref.csv"
CROSSREF_COLUMNS: tuple[str, ...] = ("split", "label", "file", "ham_image_id", "lesion_id")
_LAYOUT = "root/{train,test}/{benign,malignant}/*.jpg (or root/{benign,malignant}/*.jpg)"


def _class_folders(root: Path) -> list[tuple[str, str, Path]]:
    """(split, class name, folder) of every class folder, with split "" when there is no split level."""
    if any((root / name).is_dir() for name in BINARY_CLASS_NAMES):
        split_folders = [("", root)]
    else:
        split_folders = [
            (entry.name, entry)
            for entry in sorted(root.iterdir())
            if entry.is_dir() and entry.name[0] not in "._"
        ]
    found = [
        (split, name, folder / name)
        for split, folder in split_folders
        for name in BINARY_CLASS_NAMES
        if (folder / name).is_dir()
    ]
    if not found:
        raise DataError(
            "No benign/ or malignant/ class folders found.", path=root, fix=f"Arrange images as {_LAYOUT}."
        )
    return found


def _list_images(folder: Path) -> list[os.DirEntry]:
    """The image files of a class folder, sorted; DataError if it has none, warning about other files."""
    entries = sorted((entry for entry in os.scandir(folder) if entry.is_file()), key=lambda entry: entry.name)
    images: list[os.DirEntry] = []
    others: list[str] = []
    for entry in entries:
        if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
            images.append(entry)
        elif not entry.name.startswith("."):
            others.append(entry.name)
    if others:
        logger.warning("Ignored %d non-image file(s) in %s, e.g. %s", len(others), folder, others[0])
    if not images:
        raise DataError(
            "Empty class folder: no JPEG/PNG images in it.",
            path=folder,
            fix=f"Put the class's images in it, or remove the folder. Expected layout: {_LAYOUT}.",
        )
    return images


def _scan(root: Path) -> pd.DataFrame:
    """One row per image file: image_id "<split>/<class>/<stem>", image_path, folder_split, malignant."""
    rows = []
    for split, name, folder in _class_folders(root):
        for entry in _list_images(folder):
            image_id = "/".join(part for part in (split, name, os.path.splitext(entry.name)[0]) if part)
            rows.append((image_id, entry.path, split, int(name == "malignant")))
    frame = pd.DataFrame(rows, columns=["image_id", "image_path", "folder_split", "malignant"])
    check_unique(frame, "image_id", root)
    return frame


def _add_crossref(frame: pd.DataFrame, csv_path: Path) -> pd.DataFrame:
    """Add ham_image_id and ham_lesion_id (NaN where the image is not from HAM10000) from the crossref CSV."""
    crossref = read_checked_table(csv_path, CROSSREF_COLUMNS)
    crossref["image_id"] = [
        "/".join(part for part in (split, label, Path(file).stem) if part)
        for split, label, file in zip(crossref["split"], crossref["label"], crossref["file"], strict=True)
    ]
    check_unique(crossref, "image_id", csv_path)
    matched = crossref[crossref["ham_image_id"] != ""].set_index("image_id")
    frame["ham_image_id"] = frame["image_id"].map(matched["ham_image_id"])
    frame["ham_lesion_id"] = frame["image_id"].map(matched["lesion_id"])
    return frame


def load_folder_dataset(
    root: str | Path,
    *,
    verify_images: bool = True,
    decode_images: bool = False,
    on_error: OnError = "raise",
) -> pd.DataFrame:
    """Load a folder-per-class benign/malignant set as the shared frame (``source="folder"``), sorted.

    Adds ``folder_split`` ("train"/"test", or "" without a split level); ``dx`` is "" and ``label`` -1.
    With a ``ham10000_crossref.csv`` in the root, adds ``ham_image_id`` and ``ham_lesion_id``.
    Image checks and ``on_error`` work as in :func:`helpers.data.ham10000.load_ham10000`.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(
            "Image folder not found.", path=root, fix=f"Check the path; expected layout: {_LAYOUT}."
        )
    frame, report = validate_image_files(
        _scan(root), verify_images=verify_images, decode=decode_images, on_error=on_error, origin=root
    )
    if (root / CROSSREF_FILE).is_file():
        frame = _add_crossref(frame.copy(), root / CROSSREF_FILE)
    logger.info("Loaded %d images (%d malignant) from %s", len(frame), frame["malignant"].sum(), root)
    return conform_frame(frame, "folder", report)


def drop_ham10000_overlap(frame: pd.DataFrame, ham_frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a folder frame into (kept, removed): removed has the images of lesions found in ``ham_frame``.

    Use it before evaluating a HAM10000-trained model on the folder set (or the reverse), so no lesion is on
    both sides. Needs the ham_* columns that a ``ham10000_crossref.csv`` provides.
    """
    if "ham_lesion_id" not in frame.columns:
        raise DataError(
            "The folder frame has no ham_lesion_id column, so its overlap with HAM10000 is unknown.",
            fix=f"Put {CROSSREF_FILE} (columns {','.join(CROSSREF_COLUMNS)}) in the root; load again.",
        )
    same_lesion = frame["ham_lesion_id"].isin(ham_frame["lesion_id"])
    overlap = same_lesion | frame["ham_image_id"].isin(ham_frame["image_id"])
    logger.info(
        "Removed %d of %d images whose HAM10000 lesion is in the given frame", overlap.sum(), len(frame)
    )
    return frame[~overlap].reset_index(drop=True), frame[overlap].reset_index(drop=True)


def load_image_folder(
    root: str | Path,
    *,
    verify_images: bool = True,
    decode_images: bool = False,
    on_error: OnError = "raise",
) -> pd.DataFrame:
    """Every image file under ``root`` (any depth, sorted) as the shared frame (``source="images"``),
    unlabelled: dx "", label -1, malignant -1. For explaining or predicting images of any origin.

    Image checks and ``on_error`` work as in :func:`helpers.data.ham10000.load_ham10000`.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError("Image folder not found.", path=root, fix="Check the path.")
    paths = sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith(".")
    )
    if not paths:
        raise DataError(
            "No image files in the folder.", path=root, fix=f"use images ending in {sorted(IMAGE_SUFFIXES)}"
        )
    image_ids = [path.relative_to(root).with_suffix("").as_posix() for path in paths]
    frame = pd.DataFrame(
        {"image_id": image_ids, "image_path": [str(path) for path in paths], "malignant": -1}
    )
    frame, report = validate_image_files(
        frame, verify_images=verify_images, decode=decode_images, on_error=on_error, origin=root
    )
    return conform_frame(frame, "images", report)
