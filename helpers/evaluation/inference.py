"""Run a classifier on image files: read them at the model's input size exactly as in training, predict in
batches (optionally averaged over flips) and return class probabilities; for new images, one row each with
the probabilities corrected by the checkpoint's operating point, P(malignant) and the decision.

A sigmoid (N, 1) output is returned as the two columns [P(benign), P(malignant)], so every caller sees
one probability per class of the checkpoint. An image that cannot be read (damaged JPEG data included) gets a
row with its error and NaN probabilities; the other images are still predicted. An image far smaller than
the model input is predicted with a warning on its row.
"""

from __future__ import annotations

import math
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
from helpers.data.pipeline import decode_and_resize, image_batches
from helpers.evaluation.metrics import malignant_probability
from helpers.evaluation.operating_point import corrected_probabilities, saved_operating_point
from helpers.models.checkpoints import checked_class_names, load_checkpoint

UPSCALE_WARNING = 2.0
"""An image enlarged more than this many times along a side to fit the model input gets a warning: the
model then sees little more than blur, yet still answers with confidence."""


def model_input_size(model: keras.Model) -> tuple[int, int]:
    """(height, width) of the images ``model`` takes."""
    height, width = model.inputs[0].shape[1:3]
    return int(height), int(width)


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """(N, K) class probabilities from model outputs; a sigmoid (N, 1) becomes [P(benign), P(malignant)]."""
    outputs = np.asarray(outputs, dtype=float)
    return np.column_stack([1 - outputs[:, 0], outputs[:, 0]]) if outputs.shape[1] == 1 else outputs


def predict_batch(model: keras.Model, images: np.ndarray, *, tta: bool = False) -> np.ndarray:
    """(B, K) class probabilities of a batch of 0..255 images; ``tta`` averages them over the identity,
    horizontal flip and vertical flip of every image. ``predict_on_batch`` runs a compiled graph: about 4x
    faster on a CPU than calling the model eagerly."""
    images = np.asarray(images, dtype=np.float32)
    views = [images, images[:, :, ::-1], images[:, ::-1]] if tta else [images]
    return class_probabilities(np.mean([np.asarray(model.predict_on_batch(view)) for view in views], axis=0))


def predict_probabilities(
    model: keras.Model,
    frame: pd.DataFrame,
    *,
    input_size: Sequence[int] | None = None,
    batch_size: int = 32,
    tta: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """(N, K) class probabilities for the frame's ``image_path`` files, resized to ``input_size``
    (height, width; default the model's own); ``tta`` as in :func:`predict_batch`."""
    if frame.empty:
        raise DataError("there are no images to predict", fix="check the dataset folder and the partition")
    size = model_input_size(model) if input_size is None else tuple(input_size)
    batches = tqdm(
        image_batches(frame["image_path"], size, batch_size),
        total=math.ceil(len(frame) / batch_size),
        desc="Predicting",
        unit="batch",
        disable=not progress,
    )
    return np.concatenate([predict_batch(model, images, tta=tta) for images in batches])


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


def probability_column(class_name: str) -> str:
    """Name of the output column holding the probability of ``class_name``."""
    return f"prob_{class_name}"


def predict_images(
    checkpoint: str | Path, paths: Sequence[str | Path], *, batch_size: int = 32, progress: bool = True
) -> pd.DataFrame:
    """One row per path: path, ``prob_<class>`` per class, predicted class, p_malignant, decision
    ("malignant"/"benign" at the saved threshold, else 0.5), error ("" when the image was fine) and warning
    ("" unless the image is far smaller than the model input, see :func:`small_image_warning`).

    Probabilities are temperature-scaled and prior-corrected as saved in the operating point. A missing or
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
    """Rows for a chunk of paths: the readable images predicted in one batch (with their size warning), the
    others with their error."""
    images, errors, warnings = {}, {}, {}
    for path in paths:
        try:
            images[path] = read_for_model(path, input_size)
            warnings[path] = small_image_warning(path, input_size)
        except DataError as error:
            errors[path] = str(error).splitlines()[0]
    probs = {}
    if images:
        raw = predict_batch(model, np.stack(list(images.values())))
        batch = corrected_probabilities(raw, point["temperature"], point["class_bias"])
        probs = dict(zip(images, batch, strict=True))
    return [
        _row(path, probs.get(path), errors.get(path, ""), class_names, point["threshold"])
        | {"warning": warnings.get(path, "")}
        for path in paths
    ]


def _row(
    path: str, probs: np.ndarray | None, error: str, class_names: Sequence[str], threshold: float
) -> dict:
    """One output row but its warning; NaN probabilities and empty labels when the image failed."""
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
