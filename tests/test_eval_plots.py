"""Evaluation figures: each is titled, its axes labelled, and it shows what its arguments say."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from builders import write_noise_image

from helpers.core import config
from helpers.evaluation.metrics import malignant_probability
from helpers.plots import evaluation as eval_plots
from helpers.plots.style import has_title

RNG = np.random.default_rng(0)
LABELS = np.tile(np.arange(7), 6)
PROBS = RNG.dirichlet(np.ones(7), len(LABELS))
PROBS[np.arange(len(LABELS)), LABELS] += 1.0  # a better-than-chance model
PROBS /= PROBS.sum(axis=1, keepdims=True)
MALIGNANT = np.isin(np.array(config.CLASS_NAMES)[LABELS], list(config.MALIGNANT_CLASSES)).astype(int)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _labelled(ax) -> bool:
    return bool(ax.get_xlabel() and ax.get_ylabel())


def test_confusion_matrix_shows_counts_and_row_shares():
    matrix = np.array([[3, 1], [0, 4]])
    fig = eval_plots.confusion_matrix_figure(matrix, ["benign", "malignant"], title="CM")
    counts, shares = fig.axes
    assert fig.get_suptitle() == "CM" and _labelled(counts) and _labelled(shares)
    assert [t.get_text() for t in counts.texts] == ["3", "1", "0", "4"]
    assert [t.get_text() for t in shares.texts] == ["0.75", "0.25", "0.00", "1.00"]


@pytest.mark.parametrize("make", [eval_plots.roc_figure, eval_plots.pr_figure])
def test_curves_per_class_and_malignant(make):
    p_malignant = malignant_probability(PROBS, config.CLASS_NAMES)
    fig = make(
        PROBS, config.CLASS_NAMES, MALIGNANT, labels=LABELS, threshold=0.5, p_malignant=p_malignant,
        title="Curves",
    )  # fmt: skip
    per_class, malignant = fig.axes
    assert has_title(fig) and _labelled(per_class) and _labelled(malignant)
    assert len(per_class.get_legend().get_texts()) == 7
    legend = [t.get_text() for t in malignant.get_legend().get_texts()]
    assert legend[0].startswith("P(malignant)") and legend[1] == "threshold 0.500"


def test_the_malignant_curve_is_that_of_the_given_p_malignant_and_a_threshold_needs_it():
    """P(malignant) as the evaluation reports it (before the class bias) may rank images otherwise than the
    sum of the shown class probabilities: the curve must follow the given one."""
    perfect = np.where(MALIGNANT == 1, 0.9, 0.1)
    fig = eval_plots.roc_figure(PROBS, config.CLASS_NAMES, MALIGNANT, p_malignant=perfect)
    assert "AUC 1.000" in fig.axes[0].get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="threshold needs the p_malignant"):
        eval_plots.roc_figure(PROBS, config.CLASS_NAMES, MALIGNANT, threshold=0.5)


def test_curves_without_diagnoses_show_only_malignant_vs_benign():
    binary = np.column_stack([1 - PROBS[:, 4], PROBS[:, 4]])
    fig = eval_plots.roc_figure(binary, config.BINARY_CLASS_NAMES, MALIGNANT)
    (ax,) = fig.axes
    assert has_title(fig) and ax.get_title() == "malignant vs benign"
    auc = float(ax.get_legend().get_texts()[0].get_text().split("AUC ")[1].split(",")[0])
    assert 0.5 < auc <= 1


def test_reliability_diagram_reports_both_eces():
    fig = eval_plots.reliability_figure(LABELS, PROBS, np.full_like(PROBS, 1 / 7), title="Reliability")
    curve_ax, count_ax = fig.axes
    legend = [t.get_text() for t in curve_ax.get_legend().get_texts()]
    assert has_title(fig) and curve_ax.get_ylabel() and _labelled(count_ax)
    assert legend[0].startswith("before scaling (ECE") and legend[1].startswith("after scaling (ECE")


@pytest.fixture
def table(tmp_path) -> pd.DataFrame:
    paths = [write_noise_image(tmp_path / f"{index}.jpg", index, (30, 40)) for index in range(6)]
    return pd.DataFrame(
        {
            "image_path": [str(p) for p in paths],
            "true": ["mel", "nv", "nv", "bcc", "mel", "nv"],
            "predicted": ["mel", "mel", "nv", "nv", "nv", "nv"],
            "confidence": [0.9, 0.95, 0.8, 0.6, 0.99, 0.7],
            "correct": [True, False, True, False, False, True],
        }
    )


def test_sample_grid_captions_true_predicted_and_confidence(table):
    fig = eval_plots.sample_predictions_figure(table, n=4, seed=1)
    captions = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert has_title(fig) and len(captions) == 4
    assert all(c.startswith("true: ") and "\npred: " in c for c in captions)


def test_mistakes_gallery_is_most_confident_first(table):
    fig = eval_plots.confident_mistakes_figure(table, n=2)
    captions = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert captions == ["true: mel\npred: nv (0.99)", "true: nv\npred: mel (0.95)"]
    assert "3 mistakes in 6" in fig.get_suptitle()
    none = eval_plots.confident_mistakes_figure(table[table["correct"]])
    assert has_title(none) and "0 mistakes" in none.get_suptitle()
