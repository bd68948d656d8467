"""What training minimises: the task's cross-entropy (optionally label-smoothed) and the class weights that
up-weight rare diagnoses in it."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from helpers.core.config import CLASS_NAMES, TASK_CLASSES
from helpers.core.errors import DataError

CLASS_WEIGHT_MODES: tuple[str, ...] = ("balanced", "sqrt", "none")


def class_weights(
    labels: Sequence[int] | np.ndarray, mode: str = "balanced", num_classes: int = len(CLASS_NAMES)
) -> dict[int, float] | None:
    """Per-class loss weights from the training labels, or None for ``mode="none"``.

    "balanced" is scikit-learn's ``n_samples / (n_present_classes * count)``; "sqrt" weights by
    ``count ** -0.5``, a milder correction. Both are scaled so the mean weight per training image is 1
    (the learning rate keeps its meaning). Classes absent from ``labels`` get no entry (Keras uses 1.0).
    """
    if mode not in CLASS_WEIGHT_MODES:
        raise ValueError(f"class weighting mode must be one of {CLASS_WEIGHT_MODES}, not {mode!r}")
    if mode == "none":
        return None
    counts = _class_counts(labels, num_classes)
    present = np.flatnonzero(counts)
    raw = 1.0 / counts[present] if mode == "balanced" else counts[present] ** -0.5
    scale = counts.sum() / float(np.sum(counts[present] * raw))
    return {int(index): float(weight * scale) for index, weight in zip(present, raw, strict=True)}


def _class_counts(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class index 0..num_classes-1; labels outside that range raise DataError."""
    values = np.rint(np.asarray(labels, dtype=np.float64)).astype(np.int64).reshape(-1)
    if values.size == 0:
        raise DataError("no training labels to compute class weights from", fix="check the train partition")
    outside = values[(values < 0) | (values >= num_classes)]
    if outside.size:
        raise DataError(
            f"{outside.size} label(s) fall outside 0..{num_classes - 1}, e.g. {sorted(set(outside[:5]))}",
            fix="drop images of unknown diagnosis (label -1) or pass the right num_classes",
        )
    return np.bincount(values, minlength=num_classes).astype(np.float64)


def task_loss(task: str, label_smoothing: float = 0.0, *, soft_targets: bool = False) -> keras.losses.Loss:
    """Cross-entropy on the pipeline's labels: sparse (multiclass), binary, or with label smoothing;
    ``soft_targets`` (distillation, mixup) takes integer labels and class-probability targets alike."""
    if task == "binary":
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    if label_smoothing == 0 and not soft_targets:
        return keras.losses.SparseCategoricalCrossentropy()
    return SmoothedSparseCategoricalCrossentropy(len(TASK_CLASSES[task]), label_smoothing)


@keras.saving.register_keras_serializable(package="skinlesion")
class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """CategoricalCrossentropy with label smoothing on integer labels (one-hot encoded inside the loss), so
    datasets, class weights and metrics keep the same integer labels with or without smoothing; soft targets
    (B, num_classes), as distillation and mixup feed, are taken as they are (and smoothed alike)."""

    def __init__(
        self,
        num_classes: int = len(CLASS_NAMES),
        label_smoothing: float = 0.1,
        name: str = "smoothed_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Per-example cross-entropy against the smoothed one-hot (or soft) targets."""
        return keras.losses.categorical_crossentropy(
            class_targets(y_true, self.num_classes), y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        """The constructor arguments, so a saved model can rebuild the loss."""
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
        }


def class_targets(y_true: tf.Tensor, num_classes: int) -> tf.Tensor:
    """(B, num_classes) targets: integer labels of shape (B,) or (B, 1) one-hot encoded, soft targets of shape
    (B, num_classes) as they are (the shape is static, so this is decided once per traced graph)."""
    if len(y_true.shape) == 2 and y_true.shape[-1] == num_classes and num_classes > 1:
        return keras.ops.cast(y_true, "float32")
    return keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), num_classes)
