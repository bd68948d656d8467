"""Predict new image files with a checkpoint: one row each with the probabilities (from
:mod:`helpers.models.predict`) corrected by the checkpoint's operating point, P(malignant) (summed before the
class bias, see :func:`helpers.evaluation.operating_point.reported_probabilities`) and the decision.

A sigmoid (N, 1) output gives the two columns [P(benign), P(malignant)], so every caller sees one
probability per class of the checkpoint. An image that cannot be read (damaged JPEG data included) gets a
row with its error and NaN probabilities; the other images are still predicted. An image far smaller than
the model input, or blank, is predicted with a warning on its row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from helpers.core.config import BINARY_CLASS_NAMES
from helpers.core.errors import DataError
from helpers.data.images import image_problem, image_size
from helpers.data.pipeline import decode_and_resize
from helpers.evaluation.operating_point import reported_probabilities, saved_operating_point
from helpers.models.checkpoints import checked_class_names, load_checkpoint
from helpers.models.predict import predict_batch

UPSCALE_WARNING = 2.0
"""An image enlarged more than this many times along a side to fit the model input gets a warning: the
model then sees little more than blur, yet still answers with confidence."""

BLANK_STD_WARNING = 3.0
"""An image whose every colour channel varies less than this (standard deviation, in 8-bit levels, at the
model input) gets a warning: it is blank, not a lesion, yet the model still answers. Real lesion photos vary
far more: the lowest measured, at 225x300, was 11.0 over 300 random HAM10000 images and 10.6 over the 753
ISIC 2018 Task 3 validation images."""


def read_for_model(path: str | Path, input_size: Sequence[int]) -> np.ndarray:
    """One image as uint8 (H, W, 3) at ``input_size``, decoded as in training; DataError if unusable
    (missing, truncated, damaged or undecodable)."""
    problem = image_problem(path, decode=True)
    if problem is not None:
        raise DataError(f"Unusable image: {problem}.", path=path)
    try:
        return decode_and_resize(tf.constant(str(path)), tuple(input_size)).numpy()
    except tf.errors.OpError as error:
        raise DataError(f"Cannot decode image ({error.message}).", path=path) from error


def small_image_warning(path: str | Path, input_size: Sequence[int]) -> str:
    """A warning when the image at ``path`` is far smaller than ``input_size`` (height, width), else ""."""
    height, width = image_size(path)
    if height * UPSCALE_WARNING >= input_size[0] and width * UPSCALE_WARNING >= input_size[1]:
        return ""
    return (
        f"image of {width}x{height} pixels is far smaller than the model input of {input_size[1]}x"
        f"{input_size[0]}: enlarged, it shows too little detail for a reliable prediction"
    )


def blank_image_warning(image: np.ndarray) -> str:
    """A warning when the decoded (H, W, 3) ``image`` is (almost) one flat colour, else ""."""
    spread = float(image.reshape(-1, 3).std(axis=0).max())
    if spread >= BLANK_STD_WARNING:
        return ""
    return (
        f"image is (almost) one flat colour (pixel standard deviation {spread:.1f}): it shows no lesion, "
        "so the prediction means nothing"
    )


def image_warning(path: str | Path, image: np.ndarray, input_size: Sequence[int]) -> str:
    """The warnings for an image read for the model (see :func:`small_image_warning` and
    :func:`blank_image_warning`), joined by "; ", so that no doubtful prediction passes unflagged."""
    warnings = (small_image_warning(path, input_size), blank_image_warning(image))
    return "; ".join(warning for warning in warnings if warning)


def probability_column(class_name: str) -> str:
    """Name of the output column holding the probability of ``class_name``."""
    return f"prob_{class_name}"


def predict_images(
    checkpoint: str | Path, paths: Sequence[str | Path], *, batch_size: int = 32, progress: bool = True
) -> pd.DataFrame:
    """One row per path: path, ``prob_<class>`` per class, predicted class, p_malignant, decision
    ("malignant"/"benign" at the saved threshold, else 0.5), error ("" when the image was fine) and warning
    ("" unless the image is far smaller than the model input or blank, see :func:`image_warning`).

    Probabilities and P(malignant) are those of the saved operating point
    (:func:`~helpers.evaluation.operating_point.reported_probabilities`). A missing or
    foreign checkpoint raises :class:`~helpers.core.errors.CheckpointError`.
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
    return [
        "path",
        *map(probability_column, class_names),
        "predicted",
        "p_malignant",
        "decision",
        "error",
        "warning",
    ]


def _predict_chunk(
    model: keras.Model,
    paths: list[str],
    input_size: Sequence[int],
    class_names: Sequence[str],
    point: dict[str, float],
) -> list[dict]:
    """Rows for a chunk of paths: the readable images predicted in one batch (with their warnings), the
    others with their error."""
    images, errors, warnings = {}, {}, {}
    for path in paths:
        try:
            images[path] = read_for_model(path, input_size)
            warnings[path] = image_warning(path, images[path], input_size)
        except DataError as error:
            errors[path] = str(error).splitlines()[0]
    reported = {}
    if images:
        raw = predict_batch(model, np.stack(list(images.values())))
        probs, p_malignant = reported_probabilities(raw, point, class_names)
        reported = dict(zip(images, zip(probs, p_malignant, strict=True), strict=True))
    return [
        _row(path, reported.get(path), errors.get(path, ""), class_names, point["threshold"])
        | {"warning": warnings.get(path, "")}
        for path in paths
    ]


def _row(
    path: str,
    reported: tuple[np.ndarray, float] | None,
    error: str,
    class_names: Sequence[str],
    threshold: float,
) -> dict:
    """One output row but its warning, from the image's class probabilities and P(malignant); NaN
    probabilities and empty labels when the image failed."""
    if reported is None:
        values = dict.fromkeys(map(probability_column, class_names), np.nan)
        return {
            "path": path,
            **values,
            "predicted": "",
            "p_malignant": np.nan,
            "decision": "",
            "error": error,
        }
    probs, p_malignant = reported[0], float(reported[1])
    return {
        "path": path,
        **dict(zip(map(probability_column, class_names), probs.tolist(), strict=True)),
        "predicted": class_names[int(np.argmax(probs))],
        "p_malignant": p_malignant,
        "decision": BINARY_CLASS_NAMES[int(p_malignant >= threshold)],
        "error": error,
    }
