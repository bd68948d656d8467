"""Evaluate saved checkpoints on a test set: predictions (optionally with flip TTA), metrics with lesion-level
bootstrap CIs, a malignant threshold tuned on validation data, and temperature-scaling calibration.

Threshold and temperature are always fitted on the internal validation partition of the checkpoint's own
split, never on the test set, and saved beside the checkpoint for ``skinlesion predict``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from helpers import config
from helpers.calibration import calibrate, expected_calibration_error, fit_temperature, logits_from_probs
from helpers.checkpoints import check_compatible, load_checkpoint
from helpers.data_source import resolve_data_root
from helpers.errors import CheckpointError, DataError
from helpers.folder_dataset import drop_ham10000_overlap, load_folder_dataset
from helpers.ham10000 import load_ham10000
from helpers.inference import predict_probabilities
from helpers.isic2018 import load_isic2018_test
from helpers.metrics import (
    balanced_accuracy,
    binary_metrics,
    bootstrap_ci,
    macro_auc,
    malignant_probability,
    multiclass_metrics,
    rank_auc,
)
from helpers.prior_correction import (
    apply_class_bias,
    class_frequencies,
    fit_prior_strength,
    prior_bias,
)
from helpers.splits import apply_split, load_split
from helpers.thresholds import (
    operating_point_path,
    save_operating_point,
    saved_operating_point,
    sensitivity_specificity,
    threshold_for_sensitivity,
)

EVAL_SETS: tuple[str, ...] = ("internal", "isic2018", "folder")
TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "multiclass": config.CLASS_NAMES,
    "binary": config.BINARY_CLASS_NAMES,
}
"""The class set (in output order) a checkpoint of each task must have to be evaluated here."""


@dataclass(frozen=True)
class EvaluationSet:
    """A test frame, the internal validation frame used to tune threshold and temperature (None if the
    checkpoint has no split), a description, and whether any of it is synthetic demo data."""

    test: pd.DataFrame
    val: pd.DataFrame | None
    description: str
    synthetic: bool


# ---------------------------------------------------------------- checkpoints


def checked_class_names(metadata: dict[str, Any]) -> tuple[str, ...]:
    """The checkpoint's class names, after checking they are its task's standard class set (in order)."""
    task = metadata.get("task")
    if task not in TASK_CLASSES:
        raise CheckpointError(
            f"{metadata.get('checkpoint', 'checkpoint')} has unknown task {task!r}; expected one of "
            f"{list(TASK_CLASSES)}\nFix: evaluate a checkpoint saved by helpers.training."
        )
    check_compatible(metadata, class_names=TASK_CLASSES[task])
    return TASK_CLASSES[task]


def load_for_evaluation(checkpoint_paths: Sequence[str | Path]) -> list[tuple[keras.Model, dict[str, Any]]]:
    """Load checkpoints with their sidecars, checking they share one task and class set."""
    if not checkpoint_paths:
        raise CheckpointError("No checkpoint to evaluate.\nFix: pass one or more .h5 paths.")
    loaded = [load_checkpoint(path) for path in checkpoint_paths]
    first = loaded[0][1]
    for _, metadata in loaded:
        checked_class_names(metadata)
        if metadata["task"] != first["task"]:
            raise CheckpointError(
                f"Cannot compare {first['checkpoint']} (task {first['task']!r}) with "
                f"{metadata['checkpoint']} (task {metadata['task']!r}).\n"
                "Fix: evaluate checkpoints of one task together."
            )
    return loaded


def describe_checkpoints(loaded: Sequence[tuple[keras.Model, dict[str, Any]]]) -> pd.DataFrame:
    """One row per checkpoint with what its sidecar says: architecture, task, input size, split, val score."""
    rows = [
        {
            "checkpoint": Path(metadata["checkpoint"]).name,
            "arch": metadata.get("arch"),
            "task": metadata.get("task"),
            "input_size": tuple(metadata.get("input_size", ())),
            "monitor": metadata.get("monitor"),
            "val_metric": metadata.get("val_metric"),
            "split_file": metadata.get("split_file"),
        }
        for _, metadata in loaded
    ]
    return pd.DataFrame(rows).set_index("checkpoint")


# ---------------------------------------------------------------- evaluation sets


def evaluation_frame(
    kind: str = "internal",
    *,
    metadata: dict[str, Any],
    data_root: str | Path = "auto",
    path: str | Path | None = None,
) -> EvaluationSet:
    """The test set ``kind`` for a checkpoint, with its internal validation partition for tuning.

    "internal": the test partition of the checkpoint's split on HAM10000 (``data_root``, see
    :func:`helpers.data_source.resolve_data_root`); "isic2018": the ISIC 2018 Task 3 test folder ``path``;
    "folder": a benign/malignant folder set at ``path``, minus images of lesions the model trained or was
    validated on (when its ``ham10000_crossref.csv`` allows checking). A relative ``path`` is taken from the
    project root. Images are resized to each checkpoint's own input size when predicted; a checkpoint with
    another class set raises CheckpointError.
    """
    checked_class_names(metadata)
    if kind not in EVAL_SETS:
        raise ValueError(f"eval set must be one of {EVAL_SETS}, not {kind!r}")
    if kind == "internal":
        internal, synthetic = internal_partitions(metadata, data_root)
        return EvaluationSet(
            test=partition(internal, "test"),
            val=partition(internal, "val"),
            description=f"internal test partition of {Path(metadata['split_file']).name}",
            synthetic=synthetic,
        )
    if not path:
        raise DataError(f"eval set {kind!r} needs the path of its folder", fix="pass path=... (eval_path)")
    internal, synthetic = _internal_if_available(metadata, data_root)
    val = None if internal is None else partition(internal, "val")
    path = config.project_path(path)
    if kind == "isic2018":
        return EvaluationSet(load_isic2018_test(path), val, f"ISIC 2018 Task 3 test set at {path}", synthetic)
    test, note = _unseen_folder_images(load_folder_dataset(path), internal)
    return EvaluationSet(test, val, f"folder set at {path} ({note})", synthetic)


def internal_partitions(
    metadata: dict[str, Any], data_root: str | Path = "auto"
) -> tuple[pd.DataFrame, bool]:
    """HAM10000 with the ``partition`` of the checkpoint's saved split, and whether it is demo data."""
    _split_file(metadata)  # fail before loading any data
    source = resolve_data_root(data_root)
    return checkpoint_partitions(load_ham10000(source.root), metadata), source.is_demo


def checkpoint_partitions(frame: pd.DataFrame, metadata: dict[str, Any]) -> pd.DataFrame:
    """``frame`` with the ``partition`` column of the split the checkpoint was trained with."""
    split_file = _split_file(metadata)
    return apply_split(frame, load_split(split_file), source=split_file)


def _split_file(metadata: dict[str, Any]) -> str:
    """The split file recorded in a checkpoint's sidecar; CheckpointError if there is none."""
    split_file = metadata.get("split_file")
    if not split_file:
        raise CheckpointError(
            f"{metadata.get('checkpoint', 'The checkpoint')} records no split_file in its sidecar, so its "
            "test partition is unknown.\nFix: use a checkpoint trained by helpers.training (its sidecar "
            "names the split); to evaluate one without it, use an external eval set (isic2018 or folder)."
        )
    return split_file


def _internal_if_available(
    metadata: dict[str, Any], data_root: str | Path
) -> tuple[pd.DataFrame | None, bool]:
    if metadata.get("split_file"):
        return internal_partitions(metadata, data_root)
    warnings.warn(
        f"{metadata.get('checkpoint')} has no split_file: the threshold and temperature cannot be tuned on "
        "its validation partition; the saved operating point (or threshold 0.5, temperature 1) is used.",
        stacklevel=3,
    )
    return None, False


def partition(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of ``frame`` in partition ``name`` ("train", "val" or "test"); DataError if there are none."""
    part = frame[frame["partition"] == name].reset_index(drop=True)
    if part.empty:
        raise DataError(
            f"the split has no {name!r} images", fix="make a split with a non-zero fraction for it"
        )
    return part


def _unseen_folder_images(folder: pd.DataFrame, internal: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """The folder set without images of HAM10000 lesions in the train/val partitions, and what was done."""
    if internal is None or "ham_lesion_id" not in folder.columns:
        warnings.warn(
            "Cannot check this folder set for HAM10000 images the model has seen (needs the checkpoint's "
            "split and a ham10000_crossref.csv in the folder): its scores may be optimistic.",
            stacklevel=3,
        )
        return folder, "overlap with HAM10000 NOT checked"
    kept, removed = drop_ham10000_overlap(folder, internal[internal["partition"] != "test"])
    if kept.empty:
        raise DataError("every image of the folder set shows a lesion the model trained or was validated on")
    return kept, f"{len(removed)} images of lesions seen in training/validation removed"


# ---------------------------------------------------------------- labels


def class_labels(frame: pd.DataFrame, class_names: Sequence[str]) -> np.ndarray | None:
    """Labels as indices into ``class_names`` (malignant 0/1 for binary models); None if unknown."""
    if tuple(class_names) == config.BINARY_CLASS_NAMES:
        return frame["malignant"].to_numpy(dtype=int)
    labels = frame["label"].to_numpy(dtype=int)
    return labels if (labels >= 0).all() else None


def diagnosis_labels(frame: pd.DataFrame, class_names: Sequence[str]) -> np.ndarray | None:
    """Diagnosis indices for a multiclass model on data with known diagnoses, else None."""
    return None if tuple(class_names) == config.BINARY_CLASS_NAMES else class_labels(frame, class_names)


def calibration_view(
    frame: pd.DataFrame, probs: np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities on which calibration is measured: the model's own classes when the frame
    has them, else malignant 0/1 against P(malignant)."""
    labels = class_labels(frame, class_names)
    if labels is not None:
        return labels, probs
    return frame["malignant"].to_numpy(dtype=int), malignant_probability(probs, class_names)


# ---------------------------------------------------------------- operating point


def tune_operating_point(
    val: pd.DataFrame, val_probs: np.ndarray, class_names: Sequence[str], target_sensitivity: float = 0.90
) -> dict[str, Any]:
    """Fit on validation data, in turn: the temperature, the prior-correction class bias (for balanced
    accuracy; class frequencies from the validation labels, as the split is stratified) and the P(malignant)
    threshold reaching the target sensitivity on the resulting probabilities."""
    labels = class_labels(val, class_names)
    temperature = fit_temperature(logits_from_probs(val_probs), labels)
    calibrated = calibrate(val_probs, temperature)
    frequencies = class_frequencies(labels, len(class_names))
    strength = fit_prior_strength(labels, calibrated, frequencies)
    class_bias = prior_bias(frequencies, strength)
    adjusted = apply_class_bias(calibrated, class_bias)
    malignant = val["malignant"].to_numpy(dtype=int)
    p_malignant = malignant_probability(adjusted, class_names)
    threshold = threshold_for_sensitivity(malignant, p_malignant, target_sensitivity)
    sensitivity, specificity = sensitivity_specificity(malignant, p_malignant, threshold)
    val_metrics = {
        "images": len(val),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ece_before": expected_calibration_error(labels, val_probs),
        "ece_after": expected_calibration_error(labels, calibrated),
        "prior_strength": strength,
        "balanced_accuracy_before_bias": balanced_accuracy(labels, calibrated),
        "balanced_accuracy_after_bias": balanced_accuracy(labels, adjusted),
    }
    return {
        "threshold": threshold,
        "temperature": temperature,
        "class_bias": class_bias.tolist(),
        "target_sensitivity": target_sensitivity,
        "val_metrics": val_metrics,
    }


# ---------------------------------------------------------------- metrics


def _decision_balanced_accuracy(malignant: np.ndarray, p_malignant: np.ndarray, threshold: float) -> float:
    return balanced_accuracy(malignant, np.column_stack([p_malignant < threshold, p_malignant >= threshold]))


def headline_intervals(
    frame: pd.DataFrame,
    probs: np.ndarray,
    class_names: Sequence[str],
    threshold: float,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """95% bootstrap CIs, resampling lesions, of balanced accuracy and macro AUC (7-class, when the frame
    has diagnoses; else balanced accuracy of the malignant decision) and of the malignant ROC-AUC."""
    options = {"n_boot": n_bootstrap, "seed": seed, "groups": frame["lesion_id"].to_numpy(), "progress": True}
    malignant = frame["malignant"].to_numpy(dtype=int)
    p_malignant = malignant_probability(probs, class_names)
    labels = diagnosis_labels(frame, class_names)
    intervals = {"roc_auc": bootstrap_ci(rank_auc, malignant, p_malignant, **options)}
    if labels is not None:
        intervals["balanced_accuracy"] = bootstrap_ci(balanced_accuracy, labels, probs, **options)
        intervals["macro_auc"] = bootstrap_ci(macro_auc, labels, probs, **options)
    else:
        metric = partial(_decision_balanced_accuracy, threshold=threshold)
        intervals["balanced_accuracy"] = bootstrap_ci(metric, malignant, p_malignant, **options)
    return intervals


def summary_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The flat headline numbers of one evaluation (CI triples where computed), for compare_table."""
    binary, multiclass, calibration = result["binary"], result["multiclass"], result["calibration"]
    summary: dict[str, Any] = {key: binary[key] for key in ("accuracy", "balanced_accuracy")}
    if multiclass is not None:
        summary.update(
            {key: multiclass[key] for key in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")}
        )
    summary.update(
        {key: binary[key] for key in ("roc_auc", "pr_auc", "sensitivity", "specificity", "ppv", "npv")}
    )
    summary.update(result["intervals"])
    summary.update(
        threshold=result["operating_point"]["threshold"],
        temperature=calibration["temperature"],
        ece_before=calibration["ece_before"],
        ece_after=calibration["ece_after"],
        images=len(result["frame"]),
        lesions=result["frame"]["lesion_id"].nunique(),
    )
    return summary


def evaluate_checkpoint(
    model: keras.Model,
    metadata: dict[str, Any],
    evaluation_set: EvaluationSet,
    *,
    target_sensitivity: float = 0.90,
    n_bootstrap: int = 1000,
    tta: bool = False,
    batch_size: int = 32,
    save: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate one checkpoint: multiclass and malignant-vs-benign metrics, lesion-level bootstrap CIs,
    the validation-tuned threshold, temperature and class bias (saved beside the checkpoint when ``save``).

    Test metrics use the temperature-scaled, prior-corrected probabilities, i.e. what ``skinlesion predict``
    reports; calibration (ECE) is measured on the temperature-scaled ones.
    """
    class_names = checked_class_names(metadata)
    predict = partial(
        predict_probabilities, model, input_size=metadata["input_size"], batch_size=batch_size, tta=tta
    )
    point = _operating_point(metadata, evaluation_set.val, predict, class_names, target_sensitivity, save)
    test = evaluation_set.test
    raw = predict(test)
    calibrated = calibrate(raw, point["temperature"])
    probs = apply_class_bias(calibrated, point["class_bias"])
    p_malignant = malignant_probability(probs, class_names)
    labels = diagnosis_labels(test, class_names)
    result = {
        "checkpoint": metadata["checkpoint"],
        "class_names": class_names,
        "frame": test,
        "probs": probs,
        "p_malignant": p_malignant,
        "operating_point": point,
        "multiclass": None if labels is None else multiclass_metrics(labels, probs, class_names),
        "binary": binary_metrics(test["malignant"], p_malignant, point["threshold"]),
        "calibration": calibration_summary(test, raw, calibrated, class_names, point["temperature"]),
        "intervals": headline_intervals(
            test, probs, class_names, point["threshold"], n_bootstrap=n_bootstrap, seed=seed
        ),
    }
    result["summary"] = summary_metrics(result)
    return result


def calibration_summary(
    frame: pd.DataFrame,
    raw: np.ndarray,
    calibrated: np.ndarray,
    class_names: Sequence[str],
    temperature: float,
) -> dict[str, Any]:
    """ECE before and after temperature scaling, with the labels and probabilities it was measured on."""
    labels, before = calibration_view(frame, raw, class_names)
    after = calibration_view(frame, calibrated, class_names)[1]
    return {
        "labels": labels,
        "before": before,
        "after": after,
        "temperature": temperature,
        "ece_before": expected_calibration_error(labels, before),
        "ece_after": expected_calibration_error(labels, after),
    }


def _operating_point(
    metadata: dict[str, Any],
    val: pd.DataFrame | None,
    predict: Callable[[pd.DataFrame], np.ndarray],
    class_names: Sequence[str],
    target_sensitivity: float,
    save: bool,
) -> dict[str, Any]:
    """Tune threshold, temperature and class bias on ``val`` (saving them when asked), else read the saved."""
    checkpoint = metadata["checkpoint"]
    if val is None:
        return {**saved_operating_point(checkpoint), "target_sensitivity": None, "path": None}
    point = tune_operating_point(val, predict(val), class_names, target_sensitivity)
    path = operating_point_path(checkpoint)
    if save:
        save_operating_point(path, checkpoint=checkpoint, **point)
    return {**point, "path": path if save else None}


def prediction_table(result: dict[str, Any]) -> pd.DataFrame:
    """Per test image: path, true and predicted label, confidence and correctness, for the figure grids.

    Labels are diagnoses when both the model and the data have them, else benign/malignant (the decision
    at the tuned threshold).
    """
    frame, probs, class_names = result["frame"], result["probs"], result["class_names"]
    if result["multiclass"] is not None:
        true = frame["dx"].to_numpy()
        predicted = np.asarray(class_names)[probs.argmax(axis=1)]
        confidence = probs.max(axis=1)
    else:
        names = np.asarray(config.BINARY_CLASS_NAMES)
        true = names[frame["malignant"].to_numpy(dtype=int)]
        decision = result["p_malignant"] >= result["operating_point"]["threshold"]
        predicted = names[decision.astype(int)]
        confidence = np.where(decision, result["p_malignant"], 1 - result["p_malignant"])
    return pd.DataFrame(
        {
            "image_id": frame["image_id"],
            "image_path": frame["image_path"],
            "true": true,
            "predicted": predicted,
            "confidence": confidence,
            "correct": true == predicted,
        }
    )


def per_class_table(result: dict[str, Any]) -> pd.DataFrame:
    """Precision, recall, F1, support and one-vs-rest AUC per class (empty without 7-class labels)."""
    multiclass = result["multiclass"]
    if multiclass is None:
        return pd.DataFrame()
    table = pd.DataFrame(multiclass["per_class"]).T
    table["auc"] = pd.Series(multiclass["per_class_auc"])
    table.index.name = "class"
    return table
