"""Training figures (notebooks 02 and 03): a batch of augmented training images as the model sees them, the
loss and monitored metric per epoch of one run, and one line per learning rate of a sweep."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

PHASE_NAMES: dict[int, str] = {1: "head", 2: "fine-tune"}


def augmented_grid(
    images: np.ndarray, labels: Sequence[int], class_names: Sequence[str], *, columns: int = 4, title: str
) -> Figure:
    """Training images (uint8 (N, H, W, 3), e.g. :meth:`helpers.training.TrainingRun.augmented_batch`) in a
    grid, each captioned with its class: what augmentation hands the model, to check it looks plausible."""
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels, strict=False):
        ax.imshow(image)
        ax.set_title(class_names[int(label)], fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_training_curves(
    history: Mapping[str, Sequence[float]], *, title: str, monitored: str = "val_balanced_accuracy"
) -> Figure:
    """Loss (left) and the monitored metric (right) per epoch, training vs validation, with the start of
    each training phase marked when ``history`` has a ``phase`` entry (as :func:`helpers.training.train`)."""
    epochs = _epochs(history)
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((loss_ax, "loss", "loss"), (metric_ax, _train_key(monitored), _label(monitored))):
        if key in history:
            ax.plot(epochs, history[key], marker="o", label="training")
        ax.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        ax.set(title=label, xlabel="epoch", ylabel=label)
        _mark_phases(ax, epochs, history.get("phase"))
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_lr_comparison(
    histories: Mapping[float, Mapping[str, Sequence[float]]],
    monitored: str = "val_balanced_accuracy",
    *,
    title: str = "Learning-rate comparison",
) -> Figure:
    """Validation ``monitored`` metric (left) and validation loss (right) per epoch, one line per LR."""
    fig, (metric_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for lr, history in sorted(histories.items()):
        epochs = _epochs(history)
        metric_ax.plot(epochs, history[monitored], marker="o", label=f"lr={lr:g}")
        loss_ax.plot(epochs, history["val_loss"], marker="o", label=f"lr={lr:g}")
    metric_ax.set(title=f"validation {_label(monitored)}", xlabel="epoch", ylabel=_label(monitored))
    loss_ax.set(title="validation loss", xlabel="epoch", ylabel="loss")
    for ax in (metric_ax, loss_ax):
        ax.legend(title="learning rate")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _epochs(history: Mapping[str, Sequence[float]]) -> list[float]:
    """The 1-based epoch numbers of a history (its ``epoch`` entry, else 1..n)."""
    return list(history.get("epoch", range(1, len(history["val_loss"]) + 1)))


def _train_key(monitored: str) -> str:
    return monitored.removeprefix("val_")


def _label(monitored: str) -> str:
    return _train_key(monitored).replace("_", " ").replace("roc auc", "ROC-AUC").replace("pr auc", "PR-AUC")


def _mark_phases(ax: Axes, epochs: Sequence[float], phases: Sequence[int] | None) -> None:
    """A dashed line and a label where each phase begins (only when there is more than one phase)."""
    if not phases or len(set(phases)) < 2:
        return
    for index, phase in enumerate(phases):
        if index == 0 or phase != phases[index - 1]:
            start = epochs[index] - 0.5
            ax.axvline(start, color="grey", linestyle="--", linewidth=1)
            ax.text(
                start,
                1.0,
                f" {PHASE_NAMES.get(phase, f'phase {phase}')}",
                transform=ax.get_xaxis_transform(),
                va="top",
                ha="left",
                fontsize=9,
                color="grey",
            )
