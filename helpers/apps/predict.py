"""``skinlesion predict``: classify image files or a folder with a checkpoint and write one CSV row per
image (:func:`helpers.evaluation.inference.predict_images` does the work)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from helpers.core.atomic import atomic_path
from helpers.core.errors import DataError
from helpers.data.images import IMAGE_SUFFIXES
from helpers.evaluation.inference import predict_images
from helpers.evaluation.operating_point import saved_operating_point
from helpers.models.checkpoints import resolve_checkpoint


def image_paths(images: Sequence[str | Path], image_dir: str | Path | None) -> list[Path]:
    """The image files to predict: the given paths, or every image file under ``image_dir`` (sorted)."""
    if bool(images) == bool(image_dir):
        raise DataError("Give either image paths or --image-dir DIR (exactly one of them).")
    if images:
        return [Path(path) for path in images]
    folder = Path(image_dir)
    if not folder.is_dir():
        raise DataError("Image folder not found.", path=folder, fix="check the --image-dir path")
    found = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith(".")
    )
    if not found:
        raise DataError(
            "No image files in the folder.", path=folder, fix=f"use images ending in {sorted(IMAGE_SUFFIXES)}"
        )
    return found


def write_predictions(table: pd.DataFrame, output: str | Path) -> Path:
    """Write the predictions table as CSV, atomically."""
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False)
    return Path(output)


def summary_line(table: pd.DataFrame, threshold: float) -> str:
    """A one-line summary: how many images were predicted malignant, benign, and how many failed."""
    failed = int((table["error"] != "").sum())
    malignant = int((table["decision"] == "malignant").sum())
    return (
        f"{len(table)} images: {malignant} malignant, {len(table) - failed - malignant} benign "
        f"(threshold {threshold:.3f} on P(malignant)), {failed} failed"
        + (" (see the error column)" if failed else "")
    )


def predict_command(args: argparse.Namespace) -> int:
    """``skinlesion predict``: predict images or a folder, write the CSV, print a summary; exit 0 even if
    some images failed (the summary counts them)."""
    paths = image_paths(args.images, args.image_dir)
    checkpoint = args.model or resolve_checkpoint()
    progress = len(paths) > args.batch_size
    table = predict_images(checkpoint, paths, batch_size=args.batch_size, progress=progress)
    output = write_predictions(table, args.output)
    print(f"{summary_line(table, saved_operating_point(checkpoint)['threshold'])} -> {output}")
    return 0
