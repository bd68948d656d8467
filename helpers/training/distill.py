"""Knowledge distillation: train one model towards the class probabilities of another (typically an ensemble,
three times slower to run and larger), mixed with the true labels.

The teacher predicts every training image once, un-augmented, at its own input size (offline distillation:
minutes, against running the teacher on every augmented batch; counted in the run's time budget); the
student then learns ``(1 - weight) * one_hot(label) + weight * teacher``. With ``weight < 0.5`` the true
label stays each target's most probable class, so class weights and the training metric still follow it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core import config
from helpers.core.errors import CheckpointError
from helpers.data.splits import same_split_file
from helpers.models.checkpoints import (
    check_compatible,
    load_checkpoint,
    read_metadata,
    sidecar_path,
    trained_partitions,
)
from helpers.models.predict import predict_probabilities

DISTILL_WEIGHT_RULE = "distill_weight must be in (0, 0.5): the label stays each target's most probable class"
"""At 0.5 or above a confident teacher could tie with or outweigh the label, and the class weights (which
follow each target's most probable class) would follow the teacher's mistakes."""


def valid_distill_weight(weight: float) -> bool:
    """Whether ``weight`` keeps the label on top of every target (see :data:`DISTILL_WEIGHT_RULE`)."""
    return 0 < weight < 0.5


def teacher_probabilities(
    checkpoint: str | Path,
    frame: pd.DataFrame,
    class_names: tuple[str, ...],
    *,
    split_file: str | Path | None,
    train_partitions: tuple[str, ...],
) -> np.ndarray:
    """(N, K) class probabilities of the teacher ``checkpoint`` (a relative path from the project root) for
    the frame's images, decoded at the teacher's input size, single view. CheckpointError, before the model
    is loaded, when its classes are not ``class_names`` or it may have seen images the student holds out."""
    path = config.project_path(checkpoint)
    metadata = read_metadata(path)
    if metadata is None:
        raise CheckpointError(
            f"The teacher {path} has no readable sidecar ({sidecar_path(path).name}), so neither its "
            "classes nor the images it trained on are known.\nFix: distil from a checkpoint this project "
            "saved (bench/accuracy.py, notebook 02 or skinlesion ensemble)."
        )
    check_compatible({**metadata, "checkpoint": f"The teacher {path}"}, class_names=class_names)
    check_teacher_held_out(metadata, path, split_file, train_partitions)
    model, _ = load_checkpoint(path)
    return predict_probabilities(model, frame)


def check_teacher_held_out(
    metadata: dict, checkpoint: str | Path, split_file: str | Path | None, train_partitions: tuple[str, ...]
) -> None:
    """CheckpointError unless the teacher trained on the student's split and only on partitions the student
    trains on too: a teacher that learnt the student's validation or test images would pass what it learnt
    of them on, and the student's held-out scores would overstate it."""
    teacher_split, teacher_partitions = metadata.get("split_file"), trained_partitions(metadata)
    if same_split_file(teacher_split, split_file) and set(teacher_partitions) <= set(train_partitions):
        return
    raise CheckpointError(
        f"The teacher {checkpoint} trained on the {teacher_partitions} partitions of "
        f"{teacher_split or 'an unrecorded split'}; this run trains on {list(train_partitions)} of "
        f"{split_file or 'an unrecorded split'} and holds the others out.\n"
        "Fix: distil from a teacher trained on this run's training partitions of the same saved split (e.g. "
        "the train-only ensemble of bench/accuracy.py --config configs/recipe_cpu_ensemble.yaml)."
    )


def distillation_targets(labels: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """float32 (N, K) targets ``(1 - weight) * one_hot(labels) + weight * teacher`` (rows sum to 1)."""
    if not valid_distill_weight(weight):
        raise ValueError(f"{DISTILL_WEIGHT_RULE}; got {weight}")
    teacher = np.asarray(teacher, dtype=np.float64)
    if teacher.shape != (len(labels), teacher.shape[-1]) or not np.all(np.isfinite(teacher)):
        raise ValueError(f"teacher probabilities must be finite, (N={len(labels)}, K); got {teacher.shape}")
    one_hot = np.eye(teacher.shape[1])[np.asarray(labels, dtype=np.int64)]
    return ((1 - weight) * one_hot + weight * teacher).astype(np.float32)
