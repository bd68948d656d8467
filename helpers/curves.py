"""Training-curve figures: loss and monitored metric per epoch for one run, or one line per learning rate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

PHASE_NAMES: dict[int, str] = {1: "head", 2: "fine-tune"}


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
