"""Evaluate checkpoints on an evaluation set: predictions (optionally with flip TTA) corrected by the
operating point fitted on validation data, metrics with lesion-level bootstrap CIs, and the tables that
notebook 04, ``bench/accuracy.py`` and the README report. The one scoring path of the project.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from helpers.core import config
from helpers.core.errors import CheckpointError, DataError
from helpers.evaluation.calibration import calibrate, expected_calibration_error
from helpers.evaluation.metrics import (
    balanced_accuracy,
    binary_metrics,
    bootstrap_ci,
    macro_auc,
    multiclass_metrics,
    rank_auc,
)
from helpers.evaluation.operating_point import (
    DEFAULT_TARGET_SENSITIVITY,
    operating_point_path,
    reported_probabilities,
    save_operating_point,
    saved_operating_point,
    tune_operating_point,
)
from helpers.evaluation.sets import EvaluationSet, calibration_view, class_labels, diagnosis_labels
from helpers.models.checkpoints import checked_class_names, load_checkpoint
from helpers.models.predict import predict_probabilities


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


def _decision_balanced_accuracy(malignant: np.ndarray, p_malignant: np.ndarray, threshold: float) -> float:
    return balanced_accuracy(malignant, np.column_stack([p_malignant < threshold, p_malignant >= threshold]))


def headline_intervals(
    frame: pd.DataFrame,
    probs: np.ndarray,
    p_malignant: np.ndarray,
    class_names: Sequence[str],
    threshold: float,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """95% bootstrap CIs, resampling lesions, of balanced accuracy and macro AUC of the class probabilities
    ``probs`` (7-class, when the frame has diagnoses; else balanced accuracy of the malignant decision) and of
    the ROC-AUC of ``p_malignant``."""
    options = {"n_boot": n_bootstrap, "seed": seed, "groups": frame["lesion_id"].to_numpy(), "progress": True}
    malignant = frame["malignant"].to_numpy(dtype=int)
    labels = diagnosis_labels(frame, class_names)
    intervals = {"roc_auc": bootstrap_ci(rank_auc, malignant, p_malignant, **options)}
    if labels is not None:
        intervals["balanced_accuracy"] = bootstrap_ci(balanced_accuracy, labels, probs, **options)
        intervals["macro_auc"] = bootstrap_ci(macro_auc, labels, probs, **options)
    else:
        metric = partial(_decision_balanced_accuracy, threshold=threshold)
        intervals["balanced_accuracy"] = bootstrap_ci(metric, malignant, p_malignant, **options)
    return intervals


def paired_difference(
    result: dict[str, Any], baseline: dict[str, Any], *, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """95% bootstrap CIs of ``result`` minus ``baseline`` (two evaluations of the same images) in balanced
    accuracy and malignant ROC-AUC. Paired: each resample draws the same lesions for both models, so the
    interval is narrower than either model's own and says whether one model beats the other."""
    frame = result["frame"]
    if not np.array_equal(frame["image_id"].to_numpy(), baseline["frame"]["image_id"].to_numpy()):
        raise DataError(
            "A paired difference needs two evaluations of the same images in the same order.",
            fix="evaluate both checkpoints on the same evaluation set (same eval_set, path and split)",
        )
    options = {"n_boot": n_bootstrap, "seed": seed, "groups": frame["lesion_id"].to_numpy()}
    labels = diagnosis_labels(frame, result["class_names"])
    malignant = frame["malignant"].to_numpy(dtype=int)

    def delta(metric: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., float]:
        return lambda truth, ours, theirs: metric(truth, ours) - metric(truth, theirs)

    intervals = {
        "roc_auc": bootstrap_ci(
            delta(rank_auc), malignant, result["p_malignant"], baseline["p_malignant"], **options
        )
    }
    if labels is not None:
        probs = (result["probs"], baseline["probs"])
        intervals["balanced_accuracy"] = bootstrap_ci(delta(balanced_accuracy), labels, *probs, **options)
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
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    n_bootstrap: int = 1000,
    tta: bool = False,
    batch_size: int = 32,
    save: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate one checkpoint: multiclass and malignant-vs-benign metrics, lesion-level bootstrap CIs,
    the validation-tuned threshold, temperature and class bias (saved beside the checkpoint when ``save``).

    Test metrics use what ``skinlesion predict`` reports (:func:`reported_probabilities`): the diagnosis
    metrics, macro AUC included, the temperature-scaled, prior-corrected class probabilities; the malignant
    metrics P(malignant) summed before the correction. Calibration (ECE) uses the temperature-scaled ones.
    """
    class_names = checked_class_names(metadata)
    if (evaluation_set.test["malignant"] < 0).any():
        raise DataError(
            f"{evaluation_set.description}: unlabelled images cannot be scored.",
            fix="use a labelled eval set (internal, isic2018, folder); explain or predict unlabelled images "
            "with notebook 05 or `skinlesion predict`",
        )
    predict = partial(
        predict_probabilities, model, input_size=metadata["input_size"], batch_size=batch_size, tta=tta
    )
    point = _operating_point(metadata, evaluation_set.val, predict, class_names, target_sensitivity, save)
    test = evaluation_set.test
    raw = predict(test)
    probs, p_malignant = reported_probabilities(raw, point, class_names)
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
        "calibration": calibration_summary(test, raw, class_names, point["temperature"]),
        "intervals": headline_intervals(
            test, probs, p_malignant, class_names, point["threshold"], n_bootstrap=n_bootstrap, seed=seed
        ),
    }
    result["summary"] = summary_metrics(result)
    return result


def calibration_summary(
    frame: pd.DataFrame, raw: np.ndarray, class_names: Sequence[str], temperature: float
) -> dict[str, Any]:
    """ECE before and after temperature scaling, with the labels and probabilities it was measured on."""
    labels, before = calibration_view(frame, raw, class_names)
    after = calibration_view(frame, calibrate(raw, temperature), class_names)[1]
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
    labels = class_labels(val, class_names)
    point = tune_operating_point(
        labels, val["malignant"].to_numpy(dtype=int), predict(val), class_names, target_sensitivity
    )
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


def recall_by_confirmation(result: dict[str, Any]) -> pd.DataFrame:
    """Recall and support of each diagnosis per way it was confirmed (HAM10000's ``dx_type``: histo,
    follow_up, consensus, confocal); empty without 7-class labels or ``dx_type`` (e.g. ISIC 2018 images).

    The class recall hides a shortcut: most internal nevi are follow-up images of one clinic's camera, and a
    model can recognise those rather than the lesion; the histology-confirmed nevi, like other clinics'
    excised ones, show what it learned about the nevus itself.
    """
    frame = result["frame"]
    if result["multiclass"] is None or "dx_type" not in frame.columns:
        return pd.DataFrame(columns=["recall", "support"])
    rows = prediction_table(result).rename(columns={"true": "class"})
    rows["confirmation"] = frame["dx_type"].fillna("").astype(str).to_numpy()
    rows = rows[rows["confirmation"] != ""]
    table = rows.groupby(["class", "confirmation"])["correct"].agg(recall="mean", support="size")
    return table.astype({"support": int})
