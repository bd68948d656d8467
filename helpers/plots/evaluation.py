"""Evaluation figures: confusion matrices, ROC and precision-recall curves, reliability diagrams and image
grids of predictions (used by ``notebooks/04-test.ipynb``).

Every function returns a titled matplotlib Figure with labelled axes and leaves saving to
:func:`helpers.plots.style.save_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from helpers.data.images import read_image_rgb
from helpers.evaluation.calibration import expected_calibration_error, reliability_curve
from helpers.evaluation.metrics import binary_metrics, malignant_probability
from helpers.plots.eda import thumbnail
from helpers.plots.style import CLASS_PALETTE

CURVE_AXES: dict[str, tuple[str, str, str]] = {
    "roc": ("false positive rate (1 - specificity)", "true positive rate (sensitivity)", "AUC"),
    "pr": ("recall (sensitivity)", "precision (PPV)", "AP"),
}
"""Per curve kind: x label, y label and the name of the area under it."""
THUMBNAIL_WIDTH = 200
"""Images in grids are shrunk to at most this width so the SVGs stay small."""


def confusion_matrix_figure(
    matrix: np.ndarray, class_names: Sequence[str], *, title: str = "Confusion matrix"
) -> Figure:
    """Counts and row-normalised shares (recall on the diagonal) side by side; rows are the true class."""
    matrix = np.asarray(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = matrix / matrix.sum(axis=1, keepdims=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(6 + 1.3 * len(class_names), 0.7 * len(class_names) + 2))
    options = {"xticklabels": class_names, "yticklabels": class_names, "square": True, "cbar": False}
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", ax=left, **options)
    sns.heatmap(shares, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, ax=right, **options)
    left.set(title="counts", xlabel="predicted class", ylabel="true class")
    right.set(
        title="share of each true class (row-normalised)", xlabel="predicted class", ylabel="true class"
    )
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def roc_figure(
    probs: np.ndarray,
    class_names: Sequence[str],
    malignant: Sequence[int] | np.ndarray,
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    threshold: float | None = None,
    p_malignant: np.ndarray | None = None,
    title: str = "ROC curves",
) -> Figure:
    """One-vs-rest ROC curve per class (when ``labels`` are given) beside the malignant-vs-benign ROC curve
    of ``p_malignant`` (as the evaluation reports it; required with ``threshold``; default: summed from
    ``probs``), with the operating point at ``threshold`` marked."""
    return _curves_figure("roc", probs, class_names, malignant, labels, threshold, p_malignant, title)


def pr_figure(
    probs: np.ndarray,
    class_names: Sequence[str],
    malignant: Sequence[int] | np.ndarray,
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    threshold: float | None = None,
    p_malignant: np.ndarray | None = None,
    title: str = "Precision-recall curves",
) -> Figure:
    """Precision-recall curves laid out as :func:`roc_figure`; the dotted line is a chance-level model."""
    return _curves_figure("pr", probs, class_names, malignant, labels, threshold, p_malignant, title)


def _curves_figure(
    kind: str,
    probs: np.ndarray,
    class_names: Sequence[str],
    malignant: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray | None,
    threshold: float | None,
    p_malignant: np.ndarray | None,
    title: str,
) -> Figure:
    per_class = labels is not None and len(class_names) > 2
    fig, axes = plt.subplots(1, 2 if per_class else 1, figsize=(12 if per_class else 6.5, 5.5), squeeze=False)
    if per_class:
        labels = np.asarray(labels)
        for index, name in enumerate(class_names):
            _plot_curve(axes[0, 0], kind, labels == index, probs[:, index], name, CLASS_PALETTE.get(name))
        _finish_axes(axes[0, 0], kind, "one class vs the rest")
    if p_malignant is None:
        if threshold is not None:
            raise ValueError("a threshold needs the p_malignant it was fitted on (evaluate_checkpoint's)")
        p_malignant = malignant_probability(probs, class_names)
    malignant = np.asarray(malignant)
    _plot_curve(axes[0, -1], kind, malignant == 1, p_malignant, "P(malignant)", "black")
    if threshold is not None:
        _mark_operating_point(axes[0, -1], kind, malignant, p_malignant, threshold)
    _finish_axes(axes[0, -1], kind, "malignant vs benign")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _plot_curve(ax: Axes, kind: str, positives: np.ndarray, scores: np.ndarray, name: str, colour) -> None:
    """Draw one curve labelled with its area; classes without positives or negatives are left out."""
    if positives.all() or not positives.any():
        return
    if kind == "roc":
        x, y, _ = roc_curve(positives, scores)
        area = roc_auc_score(positives, scores)
    else:
        y, x, _ = precision_recall_curve(positives, scores)
        area = average_precision_score(positives, scores)
        ax.axhline(positives.mean(), color=colour, linestyle=":", linewidth=1)
    ax.plot(x, y, color=colour, label=f"{name} ({CURVE_AXES[kind][2]} {area:.3f}, n={positives.sum()})")


def _mark_operating_point(
    ax: Axes, kind: str, malignant: np.ndarray, p_malignant: np.ndarray, threshold: float
) -> None:
    point = binary_metrics(malignant, p_malignant, threshold)
    x, y = (
        (1 - point["specificity"], point["sensitivity"])
        if kind == "roc"
        else (point["sensitivity"], point["ppv"])
    )
    ax.plot([x], [y], "o", color="red", markersize=8, label=f"threshold {threshold:.3f}")


def _finish_axes(ax: Axes, kind: str, subtitle: str) -> None:
    xlabel, ylabel, _ = CURVE_AXES[kind]
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(title=subtitle, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)


def reliability_figure(
    labels: Sequence[int] | np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    *,
    n_bins: int = 15,
    title: str = "Reliability diagram",
) -> Figure:
    """Accuracy against confidence per bin before and after temperature scaling (ECE in the legend), above
    a histogram of the confidences. Probabilities as for
    :func:`helpers.evaluation.calibration.reliability_curve`."""
    fig, (curve_ax, count_ax) = plt.subplots(
        2, 1, figsize=(6.5, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    centres = (np.arange(n_bins) + 0.5) / n_bins
    for name, probs, colour in (("before", before, "tab:orange"), ("after", after, "tab:blue")):
        confidence, accuracy, count = reliability_curve(labels, probs, n_bins)
        ece = expected_calibration_error(labels, probs, n_bins)
        curve_ax.plot(confidence, accuracy, "o-", color=colour, label=f"{name} scaling (ECE {ece:.3f})")
        count_ax.bar(centres, count, width=1 / n_bins, color=colour, alpha=0.5, label=name)
    curve_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    curve_ax.set(title="accuracy per confidence bin", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    curve_ax.legend(loc="upper left")
    count_ax.set(xlabel="confidence (top-label probability)", ylabel="images")
    count_ax.legend(loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def sample_predictions_figure(
    table: pd.DataFrame, *, n: int = 12, seed: int = 0, title: str = "Sample predictions"
) -> Figure:
    """A grid of ``n`` random test images with true and predicted label and confidence (green = correct).

    ``table`` has the columns of :func:`helpers.evaluation.prediction_table`.
    """
    rows = table.sample(n=min(n, len(table)), random_state=seed)
    return _image_grid(rows, f"{title} ({len(rows)} random images, seed {seed})")


def confident_mistakes_figure(
    table: pd.DataFrame, *, n: int = 8, title: str = "Most confident mistakes"
) -> Figure:
    """The ``n`` wrong predictions made with the highest confidence, most confident first."""
    mistakes = table[~table["correct"]].sort_values("confidence", ascending=False, kind="stable").head(n)
    return _image_grid(mistakes, f"{title} ({int((~table['correct']).sum())} mistakes in {len(table)})")


def _image_grid(rows: pd.DataFrame, title: str, columns: int = 4) -> Figure:
    """Images in a grid of ``columns`` with "true / predicted (confidence)" captions."""
    n_rows = max(1, math.ceil(len(rows) / columns))
    fig, axes = plt.subplots(
        n_rows, columns, figsize=(3 * columns, 2.9 * n_rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows.itertuples(), strict=False):
        ax.imshow(thumbnail(read_image_rgb(row.image_path), THUMBNAIL_WIDTH))
        colour = "darkgreen" if row.correct else "darkred"
        caption = f"true: {row.true}\npred: {row.predicted} ({row.confidence:.2f})"
        ax.set_title(caption, fontsize=9, color=colour)
    if rows.empty:
        axes[0, 0].text(0.5, 0.5, "none", ha="center", va="center", fontsize=14)
    fig.suptitle(title)
    return fig
