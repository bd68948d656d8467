"""The post-hoc operating point of a checkpoint, fitted on validation data only and saved beside it.

Three steps, fitted in this order on the validation partition and applied unchanged to every later
prediction (test set, ``skinlesion predict``, the demo): a temperature that calibrates the probabilities
(:mod:`helpers.evaluation.calibration`); a prior correction that adds ``-s * log(class frequency)`` to each
class's log-probability, one strength ``s`` chosen for balanced accuracy (class-weighted training still
under-predicts df, vasc and akiec; one parameter instead of seven free biases does not over-fit ~1,500
validation images); and the P(malignant) threshold reaching a target sensitivity, so that test sensitivity
is an honest estimate. Stored as JSON (``<checkpoint stem>.operating_point.json``).

The class bias is a decision rule for the diagnosis (the arg-max over seven classes), not a probability
model: P(malignant) is summed from the temperature-scaled probabilities before it. Shifting each benign
class by its own bias re-ranked images by which benign class they resembled, and cost up to 0.015 malignant
ROC-AUC on validation images and up to 0.024 on external ones (docs/results.md). Files in the first format
(``skinlesion-operating-point-v1``) fitted their threshold after the bias, and are applied that way.
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_curve

from helpers.core.atomic import atomic_write_text
from helpers.core.errors import CheckpointError
from helpers.evaluation.calibration import (
    calibrate,
    expected_calibration_error,
    fit_temperature,
    logits_from_probs,
)
from helpers.evaluation.metrics import balanced_accuracy, check_labels, check_scores, malignant_probability
from helpers.models.checkpoints import read_metadata

DEFAULT_THRESHOLD: float = 0.5
"""Threshold on P(malignant) used when no operating point was saved for a checkpoint."""

OPERATING_POINT_FORMAT = "skinlesion-operating-point-v2"
MALIGNANT_AFTER_BIAS_FORMAT = "skinlesion-operating-point-v1"
"""The earlier format, whose threshold applies to P(malignant) summed after the class bias; still read."""
DEFAULT_TARGET_SENSITIVITY = 0.90
"""Malignant sensitivity the threshold is fitted for on validation unless a run asks for another."""
_REQUIRED_KEYS = ("format", "threshold", "target_sensitivity", "temperature", "checkpoint", "val_metrics")


def _binary_inputs(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    labels = check_labels(y_true, 2)
    return labels, check_scores(scores, labels.size)


def threshold_for_sensitivity(
    y_true: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    target: float = DEFAULT_TARGET_SENSITIVITY,
) -> float:
    """The highest threshold whose sensitivity (rule ``score >= threshold``) on these data is >= ``target``.

    Specificity never rises as the threshold falls, so this maximises specificity at that sensitivity. The
    threshold is always an observed score; samples tied at it are all called positive, so with ties the
    sensitivity reached can exceed the target. Raises ValueError if there are no positive samples.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    labels, values = _binary_inputs(y_true, scores)
    if not labels.any():
        raise ValueError("no positive (malignant) samples: sensitivity is undefined, cannot pick a threshold")
    with warnings.catch_warnings():  # all-positive data: FPR is undefined but TPR is all we need
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        _, tpr, thresholds = roc_curve(labels, values, drop_intermediate=False)
    return float(thresholds[np.argmax(tpr >= target)])


def sensitivity_specificity(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> tuple[float, float]:
    """Sensitivity and specificity of the rule ``score >= threshold`` (NaN where a class is absent)."""
    labels, values = _binary_inputs(y_true, scores)
    predicted = values >= threshold
    positives = labels == 1
    sensitivity = predicted[positives].mean() if positives.any() else float("nan")
    specificity = (~predicted[~positives]).mean() if (~positives).any() else float("nan")
    return float(sensitivity), float(specificity)


DEFAULT_STRENGTHS: tuple[float, ...] = tuple(np.round(np.arange(0.0, 1.01, 0.05), 2))
"""Strengths searched by :func:`fit_prior_strength`: 0 (no correction) to 1 (full division by the prior)."""


def class_frequencies(labels: Sequence[int] | np.ndarray, n_classes: int) -> np.ndarray:
    """Add-one smoothed class frequencies of ``labels`` (never zero, so their log is finite)."""
    counts = np.bincount(check_labels(labels, n_classes), minlength=n_classes)
    return (counts + 1) / (counts.sum() + n_classes)


def prior_bias(frequencies: Sequence[float] | np.ndarray, strength: float) -> np.ndarray:
    """The per-class log-probability offsets ``-strength * log(frequency)``, centred to mean zero."""
    bias = -strength * np.log(np.asarray(frequencies, dtype=float))
    return bias - bias.mean()


def apply_class_bias(probs: np.ndarray, bias: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """Probabilities after adding ``bias`` to each class's log-probability (unchanged if ``bias`` is None)."""
    probs = np.asarray(probs, dtype=float)
    if bias is None:
        return probs
    bias = np.asarray(bias, dtype=float)
    if probs.ndim != 2 or bias.shape != (probs.shape[1],):
        raise ValueError(f"need (N, K) probabilities and K biases, got {probs.shape} and {bias.shape}")
    return softmax(np.log(np.clip(probs, 1e-12, 1.0)) + bias, axis=1)


def fit_prior_strength(
    labels: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    frequencies: Sequence[float] | np.ndarray,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
) -> float:
    """The strength in ``strengths`` whose corrected ``probs`` have the highest balanced accuracy on
    ``labels`` (validation data); ties go to the smallest, i.e. the mildest correction."""
    corrected = (apply_class_bias(probs, prior_bias(frequencies, strength)) for strength in strengths)
    scores = [balanced_accuracy(labels, candidate) for candidate in corrected]
    return float(strengths[int(np.argmax(scores))])


def reported_probabilities(
    probs: np.ndarray, point: dict[str, Any], class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """What a checkpoint reports for model probabilities ``probs`` (N, K) under its operating ``point``: the
    class probabilities (temperature-scaled, then shifted by the class bias: the diagnosis) and P(malignant)
    (summed from the temperature-scaled ones; after the bias when ``point["malignant_after_bias"]``, as v1
    files were fitted). The class probabilities' malignant sum therefore differs from P(malignant) whenever
    the point has a class bias."""
    calibrated = calibrate(probs, point["temperature"])
    corrected = apply_class_bias(calibrated, point["class_bias"])
    malignant_source = corrected if point["malignant_after_bias"] else calibrated
    return corrected, malignant_probability(malignant_source, class_names)


def tune_operating_point(
    labels: np.ndarray,
    malignant: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
) -> dict[str, Any]:
    """Fit on validation data, in turn: the temperature, the prior-correction class bias (for balanced
    accuracy; class frequencies from the validation labels, as the split is stratified) and the P(malignant)
    threshold reaching the target sensitivity (P(malignant) from the temperature-scaled probabilities).

    ``labels`` index ``class_names``; ``malignant`` is 0/1 per image.
    """
    temperature = fit_temperature(logits_from_probs(probs), labels)
    calibrated = calibrate(probs, temperature)
    frequencies = class_frequencies(labels, len(class_names))
    strength = fit_prior_strength(labels, calibrated, frequencies)
    class_bias = prior_bias(frequencies, strength)
    adjusted = apply_class_bias(calibrated, class_bias)
    p_malignant = malignant_probability(calibrated, class_names)
    threshold = threshold_for_sensitivity(malignant, p_malignant, target_sensitivity)
    sensitivity, specificity = sensitivity_specificity(malignant, p_malignant, threshold)
    val_metrics = {
        "images": len(labels),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ece_before": expected_calibration_error(labels, probs),
        "ece_after": expected_calibration_error(labels, calibrated),
        "prior_strength": strength,
        "balanced_accuracy_before_bias": balanced_accuracy(labels, calibrated),
        "balanced_accuracy_after_bias": balanced_accuracy(labels, adjusted),
    }
    return {
        "threshold": threshold,
        "temperature": temperature,
        "class_bias": class_bias.tolist(),
        "malignant_after_bias": False,
        "target_sensitivity": target_sensitivity,
        "val_metrics": val_metrics,
    }


def operating_point_path(checkpoint_path: str | Path) -> Path:
    """Where a checkpoint's operating point lives: ``<stem>.operating_point.json`` in the same folder."""
    checkpoint_path = Path(checkpoint_path)
    return checkpoint_path.with_name(f"{checkpoint_path.stem}.operating_point.json")


def _to_json(value: object) -> object:
    """JSON encoder fallback for numpy scalars and arrays."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in an operating-point file")


def save_operating_point(
    path: str | Path,
    *,
    threshold: float,
    target_sensitivity: float,
    temperature: float,
    val_metrics: dict,
    checkpoint: str | Path,
    class_bias: Sequence[float] | None = None,
    malignant_after_bias: bool = False,
) -> Path:
    """Atomically write the tuned threshold, its target, the fitted temperature and class bias (see
    :mod:`helpers.evaluation.operating_point`; None: no correction) and val metrics as JSON; a threshold
    fitted on P(malignant) after the bias (``malignant_after_bias``) is written in the v1 format."""
    problem = _value_problem(threshold, target_sensitivity, temperature)
    if problem:
        raise ValueError(problem)
    record = {
        "format": MALIGNANT_AFTER_BIAS_FORMAT if malignant_after_bias else OPERATING_POINT_FORMAT,
        "threshold": float(threshold),
        "target_sensitivity": float(target_sensitivity),
        "temperature": float(temperature),
        "class_bias": None if class_bias is None else [float(value) for value in class_bias],
        "checkpoint": Path(checkpoint).name,
        "checkpoint_saved": _saved_at(checkpoint),
        "val_metrics": val_metrics,
    }
    return atomic_write_text(path, json.dumps(record, indent=2, default=_to_json) + "\n")


def copy_operating_point(source_checkpoint: str | Path, target_checkpoint: str | Path) -> Path:
    """Give ``target_checkpoint`` the operating point of ``source_checkpoint``: for a model trained on every
    partition, whose own validation images are gone, the one fitted by its train-only counterpart."""
    record = load_operating_point(operating_point_path(source_checkpoint))
    record["checkpoint"] = Path(target_checkpoint).name
    record["checkpoint_saved"] = _saved_at(target_checkpoint)
    record["fitted_for"] = Path(source_checkpoint).name
    return atomic_write_text(operating_point_path(target_checkpoint), json.dumps(record, indent=2) + "\n")


def _bad_operating_point(reason: str, path: Path) -> CheckpointError:
    fix = "re-run threshold tuning on the validation set (save_operating_point) for this checkpoint"
    return CheckpointError(f"{reason}\nFile: {path}\nFix: {fix}")


def load_operating_point(path: str | Path, n_classes: int | None = None) -> dict:
    """Read an operating-point JSON written by :func:`save_operating_point`; CheckpointError if bad, also when
    its class bias does not have ``n_classes`` values (when given: the checkpoint's class count)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise _bad_operating_point("operating point not found", path) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _bad_operating_point(f"operating point is not valid JSON ({error})", path) from error
    formats = (OPERATING_POINT_FORMAT, MALIGNANT_AFTER_BIAS_FORMAT)
    if not isinstance(record, dict) or record.get("format") not in formats:
        raise _bad_operating_point(f"not an operating-point file (format is not one of {formats})", path)
    missing = [key for key in _REQUIRED_KEYS if key not in record]
    if missing:
        raise _bad_operating_point(f"operating point lacks {missing}", path)
    _check_values(record, path)
    _check_class_bias(record.get("class_bias"), n_classes, path)
    return record


def _is_finite_number(value: object) -> bool:
    """Whether a value is a finite real number, numpy's included (JSON true/false are not numbers here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _value_problem(threshold: object, target: object, temperature: object) -> str:
    """Why an operating point's values are unusable ("" when they are fine): the one rule for saving and
    loading, finite numbers with 0 <= threshold <= 1, 0 < target_sensitivity <= 1 and temperature > 0."""
    if not all(map(_is_finite_number, (threshold, target, temperature))):
        return "threshold, target_sensitivity and temperature must be finite numbers"
    if not 0 <= threshold <= 1 or not 0 < target <= 1 or not temperature > 0:
        return (
            "need 0 <= threshold <= 1, 0 < target_sensitivity <= 1 and temperature > 0; got "
            f"{threshold}, {target}, {temperature}"
        )
    return ""


def _check_values(record: dict[str, Any], path: Path) -> None:
    """The record's threshold, target and temperature follow :func:`_value_problem`'s rule."""
    problem = _value_problem(*(record[key] for key in ("threshold", "target_sensitivity", "temperature")))
    if problem:
        raise _bad_operating_point(problem, path)


def _check_class_bias(bias: object, n_classes: int | None, path: Path) -> None:
    """The class bias is None (no correction) or one finite number per class (``n_classes`` when known)."""
    if bias is None:
        return
    if not isinstance(bias, list) or not all(_is_finite_number(value) for value in bias):
        raise _bad_operating_point("class_bias is not a list of finite numbers", path)
    if n_classes is not None and len(bias) != n_classes:
        raise _bad_operating_point(
            f"class_bias has {len(bias)} values but the checkpoint has {n_classes} classes "
            "(the operating point of another model?)",
            path,
        )


def saved_operating_point(checkpoint_path: str | Path) -> dict[str, Any]:
    """The saved threshold, temperature, class bias and whether the threshold applies after the bias (v1
    files) of a checkpoint, or :data:`DEFAULT_THRESHOLD`, temperature 1 and no bias when none was saved
    (files from before the class bias have none)."""
    path = operating_point_path(checkpoint_path)
    if not path.is_file():
        return {
            "threshold": DEFAULT_THRESHOLD,
            "temperature": 1.0,
            "class_bias": None,
            "malignant_after_bias": False,
        }
    metadata = read_metadata(checkpoint_path) or {}
    record = load_operating_point(path, _class_count(metadata))
    _check_same_model(record, metadata, Path(checkpoint_path).name, path)
    return {
        "threshold": float(record["threshold"]),
        "temperature": float(record["temperature"]),
        "class_bias": record.get("class_bias"),
        "malignant_after_bias": record["format"] == MALIGNANT_AFTER_BIAS_FORMAT,
    }


def _saved_at(checkpoint_path: str | Path) -> str | None:
    """When the checkpoint was saved, from its sidecar (None: no sidecar or no time): the model's identity."""
    return (read_metadata(checkpoint_path) or {}).get("created")


def _check_same_model(record: dict[str, Any], metadata: dict[str, Any], checkpoint: str, path: Path) -> None:
    """CheckpointError when the operating point was written for another model than ``checkpoint``, whose
    sidecar is ``metadata`` (another save time; files written before 2026-12-05 record none and are not
    checked)."""
    fitted, saved = record.get("checkpoint_saved"), metadata.get("created")
    if fitted and saved and fitted != saved:
        raise _bad_operating_point(
            f"the operating point was written for a model saved {fitted}, but {checkpoint} was saved {saved} "
            "(the operating point of another model?)",
            path,
        )


def _class_count(metadata: dict[str, Any]) -> int | None:
    """The checkpoint's class count from its sidecar ``metadata``, the length its class bias must have (None:
    unknown)."""
    names = metadata.get("class_names")
    return len(names) if isinstance(names, list) else None
