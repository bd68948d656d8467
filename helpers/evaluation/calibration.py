"""Calibration of predicted probabilities: expected calibration error, reliability curves and temperature
scaling (fitted on validation data, applied to test).

Binary models are handled as (N,) or (N, 1) positive-class probabilities or logits; multiclass as (N, K).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, softmax

from helpers.evaluation.metrics import check_labels

TEMPERATURE_BOUNDS: tuple[float, float] = (0.01, 100.0)
"""Search range of :func:`fit_temperature`; an optimum on a bound is reported with a warning."""


def _is_binary(values: np.ndarray) -> bool:
    return values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)


def _as_prob_matrix(probs: np.ndarray) -> np.ndarray:
    """(N, K) class probabilities; binary (N,) or (N, 1) positive-class probabilities become [1 - p, p]."""
    values = np.asarray(probs, dtype=float)
    if _is_binary(values):
        positive = values.reshape(-1)
        values = np.column_stack([1 - positive, positive])
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"expected (N,), (N, 1) or (N, K) probabilities, got shape {values.shape}")
    if not np.all((values >= 0) & (values <= 1)) or not np.allclose(values.sum(axis=1), 1, atol=1e-3):
        raise ValueError(
            "probabilities must lie in [0, 1] and each row sum to 1; "
            "for logits use apply_temperature(logits, 1.0) first"
        )
    return values


def _as_logit_matrix(logits: np.ndarray) -> np.ndarray:
    """(N, K) logits; binary (N,) or (N, 1) logits z become [0, z] as softmax([0, z]) = [1 - σ(z), σ(z)]."""
    values = np.asarray(logits, dtype=float)
    if _is_binary(values):
        values = np.column_stack([np.zeros(values.shape[0]), values.reshape(-1)])
    if values.ndim != 2 or values.shape[0] == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"expected finite (N,), (N, 1) or (N, K) logits, got shape {values.shape}")
    return values


def reliability_curve(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean top-label confidence, accuracy and sample count in each of ``n_bins`` equal-width bins of (0, 1].

    Bin ``b`` holds confidences in ``(b / n_bins, (b + 1) / n_bins]``; empty bins have NaN confidence and
    accuracy. Binary input is (N,) probabilities of the positive class.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    matrix = _as_prob_matrix(probs)
    labels = check_labels(y_true, matrix.shape[1])
    if labels.size != matrix.shape[0]:
        raise ValueError(f"{labels.size} labels but {matrix.shape[0]} rows of probabilities")
    confidence = matrix.max(axis=1)
    correct = matrix.argmax(axis=1) == labels
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_confidence = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        bin_accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
    return bin_confidence, bin_accuracy, count


def expected_calibration_error(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray, n_bins: int = 15
) -> float:
    """Top-label ECE: the count-weighted mean gap between confidence and accuracy over equal-width bins."""
    bin_confidence, bin_accuracy, count = reliability_curve(y_true, probs, n_bins)
    filled = count > 0
    gaps = np.abs(bin_accuracy[filled] - bin_confidence[filled])
    return float(np.sum(count[filled] * gaps) / count.sum())


def logits_from_probs(probs: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Logits that reproduce ``probs``: log(clip(p)) for (N, K), the log-odds for binary (N,) or (N, 1).

    softmax(log p / T) equals softmax(z / T) of the original logits z (they differ by a per-row constant),
    so temperature scaling can be fitted on saved probabilities.
    """
    values = np.asarray(probs, dtype=float)
    if _is_binary(values):
        clipped = np.clip(values, eps, 1 - eps)
        return np.log(clipped) - np.log1p(-clipped)
    return np.log(np.clip(values, eps, 1.0))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities of ``logits / temperature``: softmax over (N, K), sigmoid for binary (N,) or (N, 1)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    values = np.asarray(logits, dtype=float)
    if _is_binary(values):
        return expit(values / temperature)
    return softmax(_as_logit_matrix(values) / temperature, axis=1)


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities after temperature scaling (T > 1 softens, T < 1 sharpens), e.g. with a fitted T."""
    return apply_temperature(logits_from_probs(probs), temperature)


def fit_temperature(logits_or_log_probs: np.ndarray, y_true: Sequence[int] | np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` (sigmoid for binary logits).

    Optimises log(T) with a bounded scalar search, fit on validation data only. Accepts logits or
    :func:`logits_from_probs` output.
    """
    logits = _as_logit_matrix(logits_or_log_probs)
    labels = check_labels(y_true, logits.shape[1])
    if labels.size != logits.shape[0]:
        raise ValueError(f"{labels.size} labels but {logits.shape[0]} rows of logits")
    rows = np.arange(labels.size)

    def mean_nll(log_temperature: float) -> float:
        return float(-log_softmax(logits / math.exp(log_temperature), axis=1)[rows, labels].mean())

    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    result = minimize_scalar(mean_nll, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    temperature = math.exp(result.x)
    if min(mean_nll(low), mean_nll(high)) <= result.fun + 1e-9:
        warnings.warn(
            f"fitted temperature {temperature:.3g} is at the search bound {TEMPERATURE_BOUNDS}: "
            "the validation set may be perfectly separated or too small",
            stacklevel=2,
        )
    return temperature
