"""Operating points for malignant-vs-benign decisions: tune a threshold on validation data and save it.

The threshold is chosen on the validation set for a target sensitivity, stored as JSON beside the checkpoint,
and then applied unchanged to the test set, so test sensitivity is an honest estimate.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_curve

from helpers.atomic import atomic_write_text
from helpers.errors import CheckpointError
from helpers.metrics import check_labels, check_scores

DEFAULT_THRESHOLD: float = 0.5
"""Threshold on P(malignant) used when no operating point was saved for a checkpoint."""

OPERATING_POINT_FORMAT = "skinlesion-operating-point-v1"
_REQUIRED_KEYS = ("format", "threshold", "target_sensitivity", "temperature", "checkpoint", "val_metrics")


def _binary_inputs(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    labels = check_labels(y_true, 2)
    return labels, check_scores(scores, labels.size)


def threshold_for_sensitivity(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, target: float = 0.90
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
) -> Path:
    """Atomically write the tuned threshold, its target, the fitted temperature and class bias (see
    :mod:`helpers.prior_correction`; None: no correction) and val metrics as JSON."""
    if not math.isfinite(threshold) or not 0 < target_sensitivity <= 1 or not temperature > 0:
        raise ValueError(
            "need a finite threshold, 0 < target_sensitivity <= 1 and temperature > 0; got "
            f"{threshold}, {target_sensitivity}, {temperature}"
        )
    record = {
        "format": OPERATING_POINT_FORMAT,
        "threshold": float(threshold),
        "target_sensitivity": float(target_sensitivity),
        "temperature": float(temperature),
        "class_bias": None if class_bias is None else [float(value) for value in class_bias],
        "checkpoint": Path(checkpoint).name,
        "val_metrics": val_metrics,
    }
    return atomic_write_text(path, json.dumps(record, indent=2, default=_to_json) + "\n")


def _bad_operating_point(reason: str, path: Path) -> CheckpointError:
    fix = "re-run threshold tuning on the validation set (save_operating_point) for this checkpoint"
    return CheckpointError(f"{reason}\nFile: {path}\nFix: {fix}")


def load_operating_point(path: str | Path) -> dict:
    """Read an operating-point JSON written by :func:`save_operating_point`; CheckpointError if bad."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise _bad_operating_point("operating point not found", path) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _bad_operating_point(f"operating point is not valid JSON ({error})", path) from error
    if not isinstance(record, dict) or record.get("format") != OPERATING_POINT_FORMAT:
        raise _bad_operating_point(
            f"not an operating-point file (format is not {OPERATING_POINT_FORMAT})", path
        )
    missing = [key for key in _REQUIRED_KEYS if key not in record]
    if missing:
        raise _bad_operating_point(f"operating point lacks {missing}", path)
    bias = record.get("class_bias")
    finite = isinstance(bias, list) and all(isinstance(v, int | float) and math.isfinite(v) for v in bias)
    if bias is not None and not finite:
        raise _bad_operating_point("class_bias is not a list of finite numbers", path)
    return record


def saved_operating_point(checkpoint_path: str | Path) -> dict[str, Any]:
    """The saved threshold, temperature and class bias of a checkpoint, or :data:`DEFAULT_THRESHOLD`,
    temperature 1 and no bias when none was saved (files from before the class bias have none)."""
    path = operating_point_path(checkpoint_path)
    if not path.is_file():
        return {"threshold": DEFAULT_THRESHOLD, "temperature": 1.0, "class_bias": None}
    record = load_operating_point(path)
    return {
        "threshold": float(record["threshold"]),
        "temperature": float(record["temperature"]),
        "class_bias": record.get("class_bias"),
    }
