"""Training-curve figures: titled, labelled panels, train vs validation lines, phase marks, lines per LR."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from helpers.plots.training import plot_lr_comparison, plot_training_curves

HISTORY = {
    "epoch": [1, 2, 3, 4],
    "phase": [1, 1, 2, 2],
    "loss": [1.2, 0.9, 0.8, 0.7],
    "val_loss": [1.3, 1.0, 0.95, 0.9],
    "balanced_accuracy": [0.3, 0.45, 0.5, 0.55],
    "val_balanced_accuracy": [0.25, 0.4, 0.48, 0.5],
}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_training_curves_panels_lines_and_labels() -> None:
    fig = plot_training_curves(HISTORY, title="Run A")
    loss_ax, metric_ax = fig.axes
    assert fig._suptitle.get_text() == "Run A"
    assert (loss_ax.get_xlabel(), loss_ax.get_ylabel()) == ("epoch", "loss")
    assert metric_ax.get_ylabel() == "balanced accuracy"
    for ax in (loss_ax, metric_ax):
        labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert labels == ["training", "validation"]
    assert list(metric_ax.get_lines()[1].get_ydata()) == HISTORY["val_balanced_accuracy"]


def test_phase_start_is_marked() -> None:
    fig = plot_training_curves(HISTORY, title="Run A")
    vertical = [line for line in fig.axes[0].get_lines() if list(line.get_xdata()) == [2.5, 2.5]]
    assert len(vertical) == 1
    assert "fine-tune" in [text.get_text().strip() for text in fig.axes[0].texts]


def test_single_phase_and_binary_metric_without_training_values() -> None:
    history = {"val_loss": [0.7, 0.6], "loss": [0.8, 0.6], "val_roc_auc": [0.6, 0.7], "phase": [1, 1]}
    fig = plot_training_curves(history, title="Binary", monitored="val_roc_auc")
    metric_ax = fig.axes[1]
    assert metric_ax.get_title() == "ROC-AUC"
    assert [line.get_label() for line in metric_ax.get_lines()] == ["validation"]
    assert not fig.axes[0].texts


def test_lr_comparison_one_line_per_lr() -> None:
    histories = {1e-2: HISTORY, 1e-3: {**HISTORY, "val_balanced_accuracy": [0.2, 0.3, 0.4, 0.45]}}
    fig = plot_lr_comparison(histories, "val_balanced_accuracy")
    metric_ax, loss_ax = fig.axes
    assert [line.get_label() for line in metric_ax.get_lines()] == ["lr=0.001", "lr=0.01"]
    assert len(loss_ax.get_lines()) == 2
    assert metric_ax.get_title() == "validation balanced accuracy"
    assert (loss_ax.get_xlabel(), loss_ax.get_ylabel()) == ("epoch", "loss")
    assert fig._suptitle.get_text() == "Learning-rate comparison"
