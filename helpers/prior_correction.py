"""Prior correction of multiclass probabilities: one strength ``s`` fitted on validation balanced accuracy.

Even with class-weighted training a model under-predicts rare classes (df, vasc, akiec) relative to what
maximises balanced accuracy. Adding ``-s * log(class frequency)`` to each class's log-probability moves
decisions towards rare classes; fitting only ``s`` (not one free bias per class) keeps the correction from
over-fitting the ~1,500-image validation partition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import softmax

from helpers.calibration import calibrate
from helpers.metrics import balanced_accuracy, check_labels

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


def corrected_probabilities(
    probs: np.ndarray, temperature: float, class_bias: Sequence[float] | np.ndarray | None
) -> np.ndarray:
    """Probabilities as reported: temperature-scaled, then shifted by the validation-fitted class bias."""
    return apply_class_bias(calibrate(probs, temperature), class_bias)
