"""Honest evaluation metrics: multiclass and malignant-vs-benign scores, bootstrap CIs, comparison tables.

Balanced accuracy (mean per-class recall, the ISIC 2018 ranking metric) is the headline; every metric can
get a percentile bootstrap confidence interval, resampling lesions rather than images when given lesion ids.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from tqdm.auto import tqdm

from helpers.core.config import BINARY_CLASS_NAMES, CLASS_NAMES, MALIGNANT_CLASSES

HEADLINE_METRICS: tuple[str, ...] = (
    "balanced_accuracy",
    "macro_f1",
    "macro_auc",
    "accuracy",
    "roc_auc",
    "pr_auc",
    "sensitivity",
    "specificity",
)
"""Metrics shown first (in this order) by :func:`compare_table`."""

MALIGNANT_NAMES: frozenset[str] = MALIGNANT_CLASSES | {BINARY_CLASS_NAMES[1]}
"""Column names summed into P(malignant): the malignant diagnoses, or "malignant" of a binary model."""


class ConfidenceInterval(NamedTuple):
    """A point estimate with the bounds of its bootstrap confidence interval."""

    point: float
    low: float
    high: float


def check_labels(y_true: Sequence[int] | np.ndarray, n_classes: int) -> np.ndarray:
    """Return ``y_true`` as a 1-D int array; ValueError unless every label is in ``[0, n_classes)``."""
    labels = np.asarray(y_true)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if labels.dtype.kind not in "biuf" or not np.all(labels == np.round(labels)):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(int)
    bad = np.unique(labels[(labels < 0) | (labels >= n_classes)])
    if bad.size:
        raise ValueError(
            f"labels must lie in [0, {n_classes}); found {bad[:5].tolist()} "
            "(drop rows with unknown diagnosis, label -1, before evaluating)"
        )
    return labels


def check_scores(scores: Sequence[float] | np.ndarray, n_samples: int) -> np.ndarray:
    """Return one score per sample as a finite 1-D float array, raising ValueError otherwise."""
    values = np.asarray(scores, dtype=float)
    if values.shape != (n_samples,):
        raise ValueError(f"expected {n_samples} scores in a 1-D array, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores contain NaN or infinity; check the model outputs")
    return values


def check_prob_matrix(probs: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Return ``probs`` as a finite (N, K) float array whose K columns match ``class_names``."""
    values = np.asarray(probs, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(class_names) or values.shape[0] == 0:
        raise ValueError(
            f"expected an (N, {len(class_names)}) array of class probabilities for {list(class_names)}, "
            f"got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("probabilities contain NaN or infinity; check the model outputs")
    return values


def _check_same_length(labels: np.ndarray, scores: np.ndarray) -> None:
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} rows of scores")


def _malignant_columns(class_names: Sequence[str]) -> list[int]:
    columns = [i for i, name in enumerate(class_names) if name in MALIGNANT_NAMES]
    if not columns:
        raise ValueError(f"none of {list(class_names)} is malignant ({sorted(MALIGNANT_NAMES)})")
    return columns


def malignant_probability(probs: np.ndarray, class_names: Sequence[str] = CLASS_NAMES) -> np.ndarray:
    """P(malignant) per sample: the summed probabilities of the malignant classes (akiec + bcc + mel)."""
    return check_prob_matrix(probs, class_names)[:, _malignant_columns(class_names)].sum(axis=1)


def rank_auc(positives: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney rank statistic (ties count half), NaN without positives or negatives.

    Equals scikit-learn's roc_auc_score but is fast enough for a thousand bootstrap resamples.
    """
    positives = np.asarray(positives, dtype=bool)
    n_positive = int(positives.sum())
    n_negative = positives.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    rank_sum = rankdata(scores)[positives].sum()
    return float((rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall of the argmax over the classes present in ``labels`` (as in multiclass_metrics); fast,
    unchecked, for bootstrap resamples."""
    predicted = np.asarray(probs).argmax(axis=1)
    return float(np.mean([np.mean(predicted[labels == k] == k) for k in np.unique(labels)]))


def _one_vs_rest_aucs(labels: np.ndarray, probs: np.ndarray) -> list[float]:
    """One-vs-rest AUC of every class column, NaN where ``labels`` lack the class or all are that class."""
    return [rank_auc(labels == k, probs[:, k]) for k in range(probs.shape[1])]


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean one-vs-rest AUC over the classes where it is defined (as in multiclass_metrics); fast,
    unchecked, for bootstrap resamples."""
    return _mean_of_defined(_one_vs_rest_aucs(labels, np.asarray(probs)))


def multiclass_metrics(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> dict:
    """Accuracy, balanced accuracy, F1, one-vs-rest AUC, per-class scores and confusion matrix of argmax.

    Balanced accuracy is the mean recall over classes present in ``y_true``; macro F1 averages over classes
    present in ``y_true`` or predicted (scikit-learn's rule); macro AUC averages the classes whose one-vs-rest
    AUC is defined (both positives and negatives present), the others are NaN in ``per_class_auc``.
    """
    scores = check_prob_matrix(probs, class_names)
    labels = check_labels(y_true, len(class_names))
    _check_same_length(labels, scores)
    indices = list(range(len(class_names)))
    y_pred = scores.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, y_pred, labels=indices, zero_division=0
    )
    per_class_auc = _one_vs_rest_aucs(labels, scores)
    return {
        "accuracy": float(accuracy_score(labels, y_pred)),
        "balanced_accuracy": float(recall[support > 0].mean()),
        "macro_f1": float(f1_score(labels, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(labels, y_pred, average="weighted", zero_division=0)),
        "macro_auc": _mean_of_defined(per_class_auc),
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(class_names)
        },
        "per_class_auc": dict(zip(class_names, per_class_auc, strict=True)),
        "confusion_matrix": confusion_matrix(labels, y_pred, labels=indices),
    }


def _mean_of_defined(values: Sequence[float]) -> float:
    """Mean of the non-NaN values, NaN when there are none."""
    defined = np.asarray(values, dtype=float)
    defined = defined[~np.isnan(defined)]
    return float(defined.mean()) if defined.size else float("nan")


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def binary_metrics(
    y_true: Sequence[int] | np.ndarray, p_malignant: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict:
    """ROC-AUC, PR-AUC and the operating-point rates of ``p_malignant >= threshold`` (malignant = 1).

    Raises ValueError when ``y_true`` holds only one class, since AUC, sensitivity or specificity would be
    undefined. PPV (NPV) is NaN when no sample is predicted positive (negative).
    """
    labels = check_labels(y_true, 2)
    if np.unique(labels).size < 2:
        raise ValueError("binary metrics need benign (0) and malignant (1) samples; only one class present")
    scores = check_scores(p_malignant, labels.size)
    predicted = (scores >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel().tolist()
    sensitivity, specificity = tp / (tp + fn), tn / (tn + fp)
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
        "threshold": float(threshold),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "accuracy": (tp + tn) / labels.size,
        "balanced_accuracy": (sensitivity + specificity) / 2,
    }


def _units_per_stratum(unit_of_sample: np.ndarray, stratify: np.ndarray | None) -> list[np.ndarray]:
    """The unit ids in each stratum; raises ValueError if a group spans strata."""
    n_units = unit_of_sample.max() + 1
    if stratify is None:
        return [np.arange(n_units)]
    stratum_of_sample = np.unique(stratify, return_inverse=True)[1]
    stratum_of_unit = np.empty(n_units, dtype=int)
    stratum_of_unit[unit_of_sample] = stratum_of_sample
    if np.any(stratum_of_unit[unit_of_sample] != stratum_of_sample):
        raise ValueError("stratify must be constant within each group (e.g. one diagnosis per lesion)")
    return [np.flatnonzero(stratum_of_unit == s) for s in range(stratum_of_sample.max() + 1)]


def _resample_indices(
    n_samples: int, n_boot: int, seed: int, stratify: np.ndarray | None, groups: np.ndarray | None
) -> Iterator[np.ndarray]:
    """Sample indices of each bootstrap resample.

    Whole units (groups, else single samples) are drawn with replacement within each stratum, so every
    stratum keeps its number of units.
    """
    unit_of_sample = np.arange(n_samples) if groups is None else np.unique(groups, return_inverse=True)[1]
    order = np.argsort(unit_of_sample, kind="stable")
    sizes = np.bincount(unit_of_sample)
    starts = np.cumsum(sizes) - sizes
    strata = _units_per_stratum(unit_of_sample, stratify)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        units = np.concatenate([rng.choice(members, size=members.size) for members in strata])
        unit_sizes = sizes[units]
        unit_offsets = np.repeat(np.cumsum(unit_sizes) - unit_sizes, unit_sizes)
        yield order[np.repeat(starts[units], unit_sizes) + np.arange(unit_sizes.sum()) - unit_offsets]


def _metric_or_nan(metric_fn: Callable[..., float], arrays: Sequence[np.ndarray]) -> float:
    """The metric on one resample, NaN where it is undefined (raises ValueError)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            return float(metric_fn(*arrays))
    except ValueError:
        return float("nan")


def _check_bootstrap_inputs(columns: list[np.ndarray], alpha: float, n_boot: int, **extras) -> None:
    if not columns or len({len(a) for a in columns}) != 1 or len(columns[0]) == 0:
        raise ValueError("bootstrap_ci needs one or more non-empty arrays of the same length")
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    for name, extra in extras.items():
        if extra is not None and len(extra) != len(columns[0]):
            raise ValueError(f"{name} has {len(extra)} entries but the arrays have {len(columns[0])}")


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: Sequence | np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratify: Sequence | np.ndarray | None = None,
    groups: Sequence | np.ndarray | None = None,
    progress: bool = False,
) -> ConfidenceInterval:
    """Percentile bootstrap ``(point, low, high)`` of ``metric_fn(*arrays)`` at level ``1 - alpha``.

    ``stratify`` (e.g. labels) resamples within each class so every class appears; ``groups`` (e.g. lesion
    ids) resamples whole groups, since images of one lesion are correlated. Resamples where the metric is
    undefined (raises ValueError or returns NaN) are skipped with a warning.
    """
    columns = [np.asarray(a) for a in arrays]
    _check_bootstrap_inputs(columns, alpha, n_boot, stratify=stratify, groups=groups)
    point = float(metric_fn(*columns))
    resamples = _resample_indices(
        len(columns[0]),
        n_boot,
        seed,
        stratify=None if stratify is None else np.asarray(stratify),
        groups=None if groups is None else np.asarray(groups),
    )
    progress_bar = tqdm(resamples, total=n_boot, desc="bootstrap", disable=not progress)
    values = np.array([_metric_or_nan(metric_fn, [a[idx] for a in columns]) for idx in progress_bar])
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        raise ValueError("the metric was undefined on every bootstrap resample; try stratify=labels")
    if valid.size < n_boot:
        warnings.warn(
            f"skipped {n_boot - valid.size} of {n_boot} resamples where the metric is undefined", stacklevel=2
        )
    low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    return ConfidenceInterval(point, float(low), float(high))


def _numeric_columns(result: dict) -> dict[str, float]:
    """Flatten one result: scalars as-is, a (point, low, high) triple into ``m``, ``m_low``, ``m_high``."""
    row: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, tuple) and len(value) == 3:
            row[key], row[f"{key}_low"], row[f"{key}_high"] = (float(v) for v in value)
        elif isinstance(value, int | float | np.number) and not isinstance(value, bool):
            row[key] = float(value)
    return row


def compare_table(results: dict[str, dict], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Side-by-side table, one row per checkpoint, of scalar metrics and their CI columns when present.

    ``metrics`` picks and orders the metrics; by default all scalar metrics, :data:`HEADLINE_METRICS` first.
    Values may be floats or ``(point, low, high)`` triples such as :func:`bootstrap_ci` returns.
    """
    table = pd.DataFrame.from_dict({name: _numeric_columns(r) for name, r in results.items()}, orient="index")
    if metrics is None:
        base = [c for c in table.columns if not c.endswith(("_low", "_high"))]
        metrics = [m for m in HEADLINE_METRICS if m in base] + [m for m in base if m not in HEADLINE_METRICS]
    missing = [m for m in metrics if m not in table.columns]
    if missing:
        raise ValueError(f"no result has the metric(s) {missing}; available: {list(table.columns)}")
    ordered = [c for m in metrics for c in (m, f"{m}_low", f"{m}_high") if c in table.columns]
    table = table[ordered]
    table.index.name = "checkpoint"
    return table
