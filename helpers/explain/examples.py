"""Notebook-facing explainability: pick images to explain, explain them, and score heatmaps against lesion
masks.

Images come from an evaluation set (:mod:`helpers.evaluation.sets`) and their probabilities from
:func:`helpers.models.predict.predict_probabilities`. Images are read at their original size; Grad-CAM
and saliency maps are computed at the model's input size and upsampled to the image (see
:mod:`helpers.explain.heatmaps`), so masks are compared at full resolution.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.core import config
from helpers.core.atomic import atomic_write_text
from helpers.core.errors import DataError
from helpers.data.images import read_image_rgb
from helpers.explain.heatmaps import ExplainError, gradcam, gradcam_batch, saliency_map
from helpers.explain.localization import load_mask, localization_table, score_localization
from helpers.models.predict import class_probabilities

METHODS: tuple[str, ...] = ("gradcam", "saliency")
METHOD_LABELS: dict[str, str] = {"gradcam": "Grad-CAM", "saliency": "Saliency"}
SCORING_BATCH = 16
"""Images per Grad-CAM batch when scoring against masks (same-size images only)."""


# ---------------------------------------------------------------- predictions and example choice


def target_index(target_class: str, class_names: Sequence[str]) -> int | None:
    """Index of the class to explain by name; None (the predicted class) for an empty name."""
    if not target_class:
        return None
    if target_class not in class_names:
        raise ExplainError(
            f"target_class {target_class!r} is not one of the model's classes {list(class_names)}."
        )
    return list(class_names).index(target_class)


def _is_binary(probs: np.ndarray, class_names: Sequence[str]) -> bool:
    """Whether ``probs`` are malignant-vs-benign (one sigmoid column, or the binary class names); raise if
    their width does not fit ``class_names``."""
    if probs.ndim != 2 or probs.shape[1] not in (1, len(class_names)) or len(class_names) < 2:
        raise ExplainError(
            f"probabilities shaped {probs.shape} do not fit the classes {list(class_names)}: "
            "expected (N, 1) for a sigmoid model or (N, number of classes)."
        )
    return probs.shape[1] == 1 or tuple(class_names) == config.BINARY_CLASS_NAMES


def with_predictions(frame: pd.DataFrame, probs: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """Copy of ``frame`` with true/predicted class names, the confidence, the outcome and the ``group`` an
    example is shown in ("true mel"; on unlabelled images "predicted mel").

    ``probs`` come from :func:`helpers.evaluation.predict_probabilities` (or are a sigmoid's one column).
    A malignant-vs-benign model predicts malignant when P(malignant) >= 0.5; its truth is ``malignant``. The
    outcome is "correct"/"wrong" where the truth is known, else "unlabelled".
    """
    probs = np.asarray(probs, dtype=np.float64)
    binary = _is_binary(probs, class_names)
    if len(probs) != len(frame):
        raise ExplainError(f"got {len(probs)} rows of probabilities for {len(frame)} images.")
    if binary:
        p_malignant = class_probabilities(probs)[:, 1]
        predicted = (p_malignant >= 0.5).astype(int)
        confidence = np.where(predicted == 1, p_malignant, 1.0 - p_malignant)
    else:
        predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    names = np.asarray(class_names, dtype=object)
    truth = _known_truth(frame, binary, len(names))
    labelled = truth is not None
    shown = truth if labelled else predicted
    return frame.assign(
        true_index=shown,
        true_class=names[truth] if labelled else "",
        predicted_index=predicted,
        predicted_class=names[predicted],
        confidence=confidence,
        outcome=np.where(truth == predicted, "correct", "wrong") if labelled else "unlabelled",
        group=[f"{'true' if labelled else 'predicted'} {name}" for name in names[shown]],
    )


def _known_truth(frame: pd.DataFrame, binary: bool, n_classes: int) -> np.ndarray | None:
    """Each image's true class index for the model's task, or None when the frame does not know it."""
    column = "malignant" if binary else "label"
    values = pd.to_numeric(frame[column], errors="coerce") if column in frame.columns else None
    if values is None or values.isna().any() or (values < 0).any():
        return None
    truth = values.to_numpy(dtype=int)
    if truth.max(initial=0) >= n_classes:
        raise ExplainError(f"the frame's labels go beyond the model's classes ({n_classes}).")
    return truth


def select_examples(
    frame: pd.DataFrame,
    probs: np.ndarray,
    *,
    class_names: Sequence[str] = config.CLASS_NAMES,
    per_class: int = 2,
    image_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Images to explain: per true class its ``per_class`` most confident correct and wrong predictions (on
    unlabelled images: per predicted class its most confident ones).

    With ``image_ids`` exactly those images, in that order. Rows carry the :func:`with_predictions` columns.
    """
    predictions = with_predictions(frame, probs, class_names)
    if image_ids:
        unknown = sorted(set(image_ids) - set(predictions["image_id"]))
        if unknown:
            raise DataError(
                f"image_ids {unknown} are not among the {len(frame)} images of this evaluation set.",
                fix="pick image ids of the chosen eval_set (the checkpoint's test partition by default), "
                "or pass image_ids=[].",
            )
        return predictions.set_index("image_id").loc[list(image_ids)].reset_index()
    ranked = predictions.sort_values("confidence", ascending=False, kind="stable")
    chosen = ranked.groupby(["true_index", "outcome"]).head(per_class)
    order = ["true_index", "outcome", "confidence"]
    return chosen.sort_values(order, ascending=[True, True, False], kind="stable").reset_index(drop=True)


def has_masks(frame: pd.DataFrame) -> bool:
    """Whether any image of the frame has a lesion mask to score heatmaps against (HAM10000 has them)."""
    return "mask_path" in frame.columns and bool(frame["mask_path"].map(_has_path).any())


# ---------------------------------------------------------------- heatmaps and figures


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ExplainError(f"Unknown explanation method {method!r}; choose one of {list(METHODS)}.")


def _heatmap(
    model: keras.Model, image: np.ndarray, method: str, class_index: int | None, layer_name: str | None
) -> np.ndarray:
    if method == "gradcam":
        return gradcam(model, image, class_index=class_index, layer_name=layer_name)[0]
    return saliency_map(model, image, class_index=class_index)


def explain_examples(
    model: keras.Model,
    frame_rows: pd.DataFrame,
    *,
    method: str = "gradcam",
    class_index: int | None = None,
    layer_name: str | None = None,
) -> list[np.ndarray]:
    """One heatmap (H, W) in [0, 1] per row, at the image's original size, for ``class_index`` or the
    predicted class; ``layer_name`` (Grad-CAM only) defaults to the last spatial layer."""
    _check_method(method)
    rows = tqdm(
        frame_rows["image_path"], desc=METHOD_LABELS[method], unit="img", disable=len(frame_rows) < 20
    )
    return [_heatmap(model, read_image_rgb(path), method, class_index, layer_name) for path in rows]


def _has_path(value: object) -> bool:
    return isinstance(value, str) and bool(value)


# ---------------------------------------------------------------- localization against masks


def localization_sample(frame: pd.DataFrame, limit: int | None, *, seed: int = 0) -> pd.DataFrame:
    """Up to ``limit`` rows (all if None or 0) drawn class-balanced as far as the classes allow, seeded."""
    if not limit or limit >= len(frame):
        return frame
    shuffled = frame.sample(frac=1.0, random_state=seed)
    rank = shuffled.groupby("dx").cumcount()
    return shuffled.assign(_rank=rank).sort_values("_rank", kind="stable").head(limit).drop(columns="_rank")


def _rows_with_masks(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that have a lesion mask; warns with the count of those left out, raises if none has one."""
    paths = frame["mask_path"] if "mask_path" in frame.columns else pd.Series(None, index=frame.index)
    has_mask = paths.map(_has_path).astype(bool)
    if not has_mask.any():
        raise DataError(
            "None of these images has a lesion mask, so localization cannot be scored.",
            fix="Put the HAM10000_segmentations_lesion_tschandl folder beside the images, reload the data.",
        )
    if not has_mask.all():
        warnings.warn(
            f"{int((~has_mask).sum())} of {len(frame)} images have no lesion mask; not scored.", stacklevel=3
        )
    return frame[has_mask]


def _gradcams(
    model: keras.Model, images: Sequence[np.ndarray], layer_name: str | None
) -> list[tuple[np.ndarray, int, np.ndarray]]:
    """Grad-CAM of each image for its predicted class, in one batch when the images share one size."""
    if len({image.shape for image in images}) == 1:
        batch = gradcam_batch(model, np.stack(images), layer_name=layer_name, batch_size=SCORING_BATCH)
        return list(zip(*batch, strict=True))
    return [gradcam(model, image, layer_name=layer_name) for image in images]


def _image_records(
    model: keras.Model, row: Any, image: np.ndarray, explained: tuple, saliency: bool
) -> list[dict[str, Any]]:
    """Localization records of one image: its Grad-CAM and, if asked, its saliency for the same class."""
    heatmap, predicted, probabilities = explained
    mask = load_mask(row.mask_path, image.shape[:2])
    maps = {"gradcam": heatmap}
    if saliency:
        maps["saliency"] = saliency_map(model, image, class_index=int(predicted))
    truth = row.malignant if len(probabilities) == 1 else row.label
    common = {
        "image_id": row.image_id,
        "dx": row.dx,
        "predicted_index": int(predicted),
        "correct": truth == predicted,
    }
    return [{**common, "method": method, **score_localization(m, mask)} for method, m in maps.items()]


def score_against_masks(
    model: keras.Model,
    frame: pd.DataFrame,
    *,
    layer_name: str | None = None,
    limit: int | None = None,
    saliency: bool = True,
) -> pd.DataFrame:
    """Per-image, per-method localization records for the predicted class (long format, ``method`` column).

    Each Grad-CAM (and saliency) map is scored by energy inside the lesion mask and the pointing game,
    next to the centred Gaussian baseline and the mask area
    (:func:`helpers.explain.localization.score_localization`).
    ``limit`` scores a class-balanced sample of that many images (see :func:`localization_sample`).
    """
    rows = localization_sample(_rows_with_masks(frame), limit)
    records = []
    with tqdm(total=len(rows), desc="Scoring heatmaps", unit="img") as progress:
        for start in range(0, len(rows), SCORING_BATCH):
            chunk = rows.iloc[start : start + SCORING_BATCH]
            images = [read_image_rgb(path) for path in chunk["image_path"]]
            explained = _gradcams(model, images, layer_name)
            for row, image, result in zip(chunk.itertuples(index=False), images, explained, strict=True):
                records += _image_records(model, row, image, result, saliency)
            progress.update(len(chunk))
    return pd.DataFrame(records)


def localization_summary(records: pd.DataFrame) -> pd.DataFrame:
    """Per-class table (plus ``all``): each method's energy inside the mask and pointing rate next to the
    centred Gaussian baseline and the mask area, which is what a uniform heatmap or random point scores."""
    if records.empty or "method" not in records.columns:
        raise ExplainError(
            "localization_summary needs the records of score_against_masks (with a method column)."
        )
    tables = {method: localization_table(group) for method, group in records.groupby("method", sort=False)}
    first = next(iter(tables.values()))
    summary = pd.DataFrame(
        {"n": first["n"], "mask_area": first["mask_area"], "energy_gaussian": first["baseline_energy_inside"]}
    )
    for method, table in tables.items():
        summary[f"energy_{method}"] = table["energy_inside"]
    summary["pointing_gaussian"] = first["baseline_pointing_rate"]
    for method, table in tables.items():
        summary[f"pointing_{method}"] = table["pointing_rate"]
    for method, table in tables.items():
        summary[f"empty_{method}"] = table["n_empty_heatmaps"]
    return summary


def save_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV atomically (index included) and return the path."""
    return atomic_write_text(path, table.to_csv())
