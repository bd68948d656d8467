"""Predict new images with a saved checkpoint: class probabilities, P(malignant) and the malignant decision
at the checkpoint's validation-tuned operating point (``skinlesion predict``).

Images are decoded and resized exactly as in training (:func:`helpers.inference.read_for_model`). A file
that cannot be read gets a row with its error and NaN probabilities; the other images are still predicted.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.atomic import atomic_path
from helpers.checkpoints import load_checkpoint
from helpers.config import BINARY_CLASS_NAMES
from helpers.errors import DataError
from helpers.evaluation import checked_class_names
from helpers.images import IMAGE_SUFFIXES
from helpers.inference import predict_batch, read_for_model
from helpers.metrics import malignant_probability
from helpers.prior_correction import corrected_probabilities
from helpers.thresholds import saved_operating_point


def probability_column(class_name: str) -> str:
    """Name of the output column holding the probability of ``class_name``."""
    return f"prob_{class_name}"


def predict_images(
    checkpoint: str | Path, paths: Sequence[str | Path], *, batch_size: int = 32, progress: bool = True
) -> pd.DataFrame:
    """One row per path: path, ``prob_<class>`` per class, predicted class, p_malignant, decision
    ("malignant"/"benign" at the saved threshold, else 0.5) and error ("" when the image was fine).

    Probabilities are temperature-scaled and prior-corrected as saved in the operating point. A missing or
    foreign checkpoint raises :class:`~helpers.errors.CheckpointError`.
    """
    model, metadata = load_checkpoint(checkpoint)
    class_names = checked_class_names(metadata)
    point = saved_operating_point(checkpoint)
    rows: list[dict] = []
    with tqdm(total=len(paths), desc="Predicting", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = [str(path) for path in paths[start : start + batch_size]]
            rows.extend(_predict_chunk(model, chunk, metadata["input_size"], class_names, point))
            bar.update(len(chunk))
    return pd.DataFrame(rows, columns=_columns(class_names))


def _columns(class_names: Sequence[str]) -> list[str]:
    return ["path", *map(probability_column, class_names), "predicted", "p_malignant", "decision", "error"]


def _predict_chunk(
    model: keras.Model,
    paths: list[str],
    input_size: Sequence[int],
    class_names: Sequence[str],
    point: dict[str, float],
) -> list[dict]:
    """Rows for a chunk of paths: the readable images predicted in one batch, the others with their error."""
    images, errors = {}, {}
    for path in paths:
        try:
            images[path] = read_for_model(path, input_size)
        except DataError as error:
            errors[path] = str(error).splitlines()[0]
    probs = {}
    if images:
        raw = predict_batch(model, np.stack(list(images.values())))
        batch = corrected_probabilities(raw, point["temperature"], point["class_bias"])
        probs = dict(zip(images, batch, strict=True))
    return [
        _row(path, probs.get(path), errors.get(path, ""), class_names, point["threshold"]) for path in paths
    ]


def _row(
    path: str, probs: np.ndarray | None, error: str, class_names: Sequence[str], threshold: float
) -> dict:
    """One output row; NaN probabilities and empty labels when the image failed."""
    if probs is None:
        values = dict.fromkeys(map(probability_column, class_names), np.nan)
        return {
            "path": path,
            **values,
            "predicted": "",
            "p_malignant": np.nan,
            "decision": "",
            "error": error,
        }
    p_malignant = float(malignant_probability(probs[np.newaxis], class_names)[0])
    return {
        "path": path,
        **dict(zip(map(probability_column, class_names), probs.tolist(), strict=True)),
        "predicted": class_names[int(np.argmax(probs))],
        "p_malignant": p_malignant,
        "decision": BINARY_CLASS_NAMES[int(p_malignant >= threshold)],
        "error": error,
    }


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
    table = predict_images(
        args.model, paths, batch_size=args.batch_size, progress=len(paths) > args.batch_size
    )
    output = write_predictions(table, args.output)
    print(f"{summary_line(table, saved_operating_point(args.model)['threshold'])} -> {output}")
    return 0
