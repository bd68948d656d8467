"""``skinlesion predict``: classify image files or a folder with a checkpoint and write one CSV row per
image (:func:`helpers.evaluation.inference.predict_images` does the work).

Everything that can be checked before predicting is: the output path, the images to read, and what a folder
holds that is left out (each named with the reason). Exit 0 when at least one image was predicted (failed
ones have their error on their row), :data:`NOTHING_PREDICTED_EXIT_CODE` when none could be.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from helpers.core.atomic import atomic_path
from helpers.core.errors import DataError
from helpers.data.images import IMAGE_SUFFIXES
from helpers.data.validation import format_listing
from helpers.evaluation.inference import predict_images
from helpers.evaluation.operating_point import saved_operating_point
from helpers.models.checkpoints import resolve_checkpoint

NOTHING_PREDICTED_EXIT_CODE = 1
"""Exit status when not one image could be predicted (the CSV is still written, with every row's error)."""


def image_paths(images: Sequence[str | Path], image_dir: str | Path | None) -> tuple[list[Path], list[str]]:
    """The image files to predict (the given paths, or every image file under ``image_dir``, sorted) and one
    line per file under ``image_dir`` left out, saying why."""
    if bool(images) == bool(image_dir):
        raise DataError("Give either image paths or --image-dir DIR (exactly one of them).")
    if images:
        return [Path(path) for path in images], []
    folder = Path(image_dir)
    if not folder.is_dir():
        raise DataError("Image folder not found.", path=folder, fix="check the --image-dir path")
    found, skipped = [], []
    for path in sorted(path for path in folder.rglob("*") if not path.is_dir()):
        reason = _skip_reason(path)
        if reason:
            skipped.append(f"{path.relative_to(folder)}: {reason}")
        else:
            found.append(path)
    if not found:
        left_out = f" Left out:\n{format_listing(skipped)}" if skipped else ""
        raise DataError(
            f"No image files in the folder.{left_out}",
            path=folder,
            fix=f"use images ending in {sorted(IMAGE_SUFFIXES)}",
        )
    return found, skipped


def _skip_reason(path: Path) -> str:
    """Why an entry of an image folder is not read ("" if it is): hidden, not an image suffix, or not a
    readable file (a broken link or link loop, a pipe, no read permission)."""
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image suffix ({path.suffix or 'none'}; read: {', '.join(sorted(IMAGE_SUFFIXES))})"
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return "not a regular file"
    except OSError as error:
        return f"{'broken link' if path.is_symlink() else 'cannot be read'} ({error.strerror})"
    return "" if os.access(path, os.R_OK) else "not readable (no read permission)"


def check_output(output: str | Path, images: Sequence[Path] = ()) -> Path:
    """``output`` after checking, before any work, that a CSV can be written there without destroying data:
    not a folder, not one of ``images`` nor named like an image, in a folder that exists (created if
    missing) and is writable; DataError otherwise."""
    output = Path(output)
    fix = "give --output a file path in a writable folder, e.g. predictions.csv"
    if output.is_dir():
        raise DataError("--output is a folder, not a CSV file.", path=output, fix=fix)
    replaced = output.parent.resolve() / output.name  # the entry the CSV replaces (a link, not its target)
    inputs = {path.resolve() for path in images} | {path.parent.resolve() / path.name for path in images}
    if replaced in inputs:
        raise DataError("--output is one of the input images: it would be overwritten.", path=output, fix=fix)
    if output.suffix.lower() in IMAGE_SUFFIXES:
        raise DataError(
            f"--output ends in {output.suffix}, an image suffix: a CSV is not written under an image name.",
            path=output,
            fix=fix,
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"Cannot create the folder of --output: {error.strerror}.", path=output, fix=fix
        ) from None
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise DataError("The folder of --output is not writable.", path=output.parent, fix=fix)
    return output


def write_predictions(table: pd.DataFrame, output: str | Path) -> Path:
    """Write the predictions table as CSV, atomically. Should that still fail, the table is saved in the
    temporary folder instead, and the DataError says where: finished work is never lost."""
    try:
        with atomic_path(output) as tmp:
            table.to_csv(tmp, index=False)
        return Path(output)
    except OSError as error:
        handle, rescue = tempfile.mkstemp(prefix="skinlesion-predictions-", suffix=".csv")
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            table.to_csv(stream, index=False)
        raise DataError(
            f"Cannot write the predictions ({error}); all {len(table)} rows were saved to {rescue} instead.",
            path=output,
            fix=f"move {rescue} where you want it, or run again with a writable --output",
        ) from error


def summary_line(table: pd.DataFrame, threshold: float) -> str:
    """A one-line summary: how many images were predicted malignant, benign, how many failed or warned."""
    failed = int((table["error"] != "").sum())
    warned = int((table["warning"] != "").sum())
    malignant = int((table["decision"] == "malignant").sum())
    return (
        f"{len(table)} images: {malignant} malignant, {len(table) - failed - malignant} benign "
        f"(threshold {threshold:.3f} on P(malignant)), {failed} failed"
        + (" (see the error column)" if failed else "")
        + (f", {warned} with a warning (see the warning column)" if warned else "")
    )


def predict_command(args: argparse.Namespace) -> int:
    """``skinlesion predict``: predict images or a folder, write the CSV, print a summary. Exit 0 when some
    images were predicted, even if others failed; NOTHING_PREDICTED_EXIT_CODE when none was."""
    paths, skipped = image_paths(args.images, args.image_dir)
    output = check_output(args.output, paths)
    if skipped:
        print(
            f"Skipped {len(skipped)} file(s) under {args.image_dir}:\n{format_listing(skipped)}",
            file=sys.stderr,
        )
    checkpoint = args.model or resolve_checkpoint()
    progress = len(paths) > args.batch_size
    table = predict_images(checkpoint, paths, batch_size=args.batch_size, progress=progress)
    output = write_predictions(table, output)
    print(f"{summary_line(table, saved_operating_point(checkpoint)['threshold'])} -> {output}")
    if (table["error"] != "").all():
        print(
            f"error: none of the {len(table)} images could be predicted; see the error column of {output}",
            file=sys.stderr,
        )
        return NOTHING_PREDICTED_EXIT_CODE
    return 0
