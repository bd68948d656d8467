"""Class weights for imbalanced training: Keras ``class_weight`` dicts that up-weight rare diagnoses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from helpers.errors import DataError

CLASS_WEIGHT_MODES: tuple[str, ...] = ("balanced", "sqrt", "none")


def class_weights(
    labels: Sequence[int] | np.ndarray, mode: str = "balanced", num_classes: int = 7
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
