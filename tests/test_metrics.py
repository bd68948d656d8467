"""Evaluation metrics against hand-computed values, bootstrap CIs and the comparison table."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from helpers.core.config import BINARY_CLASS_NAMES, CLASS_NAMES
from helpers.evaluation.metrics import (
    ConfidenceInterval,
    balanced_accuracy,
    binary_metrics,
    bootstrap_ci,
    compare_table,
    macro_auc,
    malignant_probability,
    multiclass_metrics,
    rank_auc,
)

THREE_CLASSES = ("akiec", "bkl", "nv")


def _probs_predicting(y_pred: list[int], n_classes: int) -> np.ndarray:
    """Rows with 0.8 on the predicted class and the rest shared equally."""
    probs = np.full((len(y_pred), n_classes), 0.2 / (n_classes - 1))
    probs[np.arange(len(y_pred)), y_pred] = 0.8
    return probs


# --- malignant read-out ------------------------------------------------------------------------------------


def test_malignant_probability_sums_akiec_bcc_mel() -> None:
    probs = np.array([[0.1, 0.2, 0.05, 0.05, 0.3, 0.2, 0.1], [0.0, 0.0, 0.5, 0.1, 0.0, 0.4, 0.0]])
    np.testing.assert_allclose(malignant_probability(probs), [0.1 + 0.2 + 0.3, 0.0])


def test_malignant_probability_goes_by_name_not_position() -> None:
    names = ("nv", "mel", "bkl")
    probs = np.array([[0.7, 0.2, 0.1]])
    np.testing.assert_allclose(malignant_probability(probs, names), [0.2])
    np.testing.assert_allclose(malignant_probability(np.array([[0.3, 0.7]]), BINARY_CLASS_NAMES), [0.7])


def test_malignant_probability_rejects_wrong_column_count() -> None:
    with pytest.raises(ValueError, match="7"):
        malignant_probability(np.ones((2, 5)) / 5)


# --- multiclass ------------------------------------------------------------------------------------------


def test_multiclass_metrics_match_hand_computation() -> None:
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    result = multiclass_metrics(y_true, _probs_predicting(y_pred, 3), THREE_CLASSES)
    # class 0: TP 2, FN 1, FP 0 | class 1: TP 1, FN 1, FP 1 | class 2: TP 1, FN 0, FP 1
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert result["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert result["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert result["per_class"] == {
        "akiec": {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3},
        "bkl": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        "nv": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
    }
    np.testing.assert_array_equal(result["confusion_matrix"], [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    # class 0 scores: positives 0.8, 0.8, 0.1 vs negatives 0.1 x3 -> 6 wins + 3 ties of 9 pairs
    assert result["per_class_auc"]["akiec"] == pytest.approx(7.5 / 9)


def test_balanced_accuracy_is_mean_recall_like_sklearn() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 7, 300)
    probs = rng.dirichlet(np.ones(7), 300)
    result = multiclass_metrics(y_true, probs)
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, probs.argmax(1)))
    recalls = [result["per_class"][name]["recall"] for name in CLASS_NAMES]
    assert result["balanced_accuracy"] == pytest.approx(np.mean(recalls))


def test_absent_class_keeps_indices_and_gets_nan_auc() -> None:
    y_true = [0, 0, 1, 1]
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.2, 0.5]])
    result = multiclass_metrics(y_true, probs, THREE_CLASSES)
    assert result["per_class"]["nv"]["support"] == 0
    assert result["per_class"]["nv"]["precision"] == 0  # predicted once, never right
    assert np.isnan(result["per_class_auc"]["nv"])
    assert result["balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 2) / 2)  # mean over present classes only
    present_aucs = [result["per_class_auc"][name] for name in ("akiec", "bkl")]
    assert result["macro_auc"] == pytest.approx(np.mean(present_aucs))
    assert result["confusion_matrix"].shape == (3, 3)


def test_macro_auc_perfect_and_random() -> None:
    y_true = np.repeat(np.arange(3), 5)
    assert multiclass_metrics(y_true, np.eye(3)[y_true], THREE_CLASSES)["macro_auc"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    y_random = rng.integers(0, 7, 20_000)
    assert multiclass_metrics(y_random, rng.dirichlet(np.ones(7), 20_000))["macro_auc"] == pytest.approx(
        0.5, abs=0.02
    )


@pytest.mark.parametrize(
    ("labels", "probs", "message"),
    [
        ([0, 7], np.ones((2, 7)) / 7, "labels must lie"),
        ([0, 1, 2], np.ones((2, 7)) / 7, "3 labels but 2"),
        ([0.5, 1], np.ones((2, 7)) / 7, "integer"),
        ([0, 1], np.full((2, 7), np.nan), "NaN"),
    ],
)
def test_multiclass_metrics_rejects_bad_input(labels: list, probs: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        multiclass_metrics(labels, probs)


# --- binary ----------------------------------------------------------------------------------------------


def test_binary_metrics_match_hand_computation() -> None:
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    p = [0.9, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05]
    result = binary_metrics(y, p, threshold=0.5)  # TP 2, FN 1, FP 1, TN 4
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert result["specificity"] == pytest.approx(4 / 5)
    assert result["ppv"] == pytest.approx(2 / 3)
    assert result["npv"] == pytest.approx(4 / 5)
    assert result["accuracy"] == pytest.approx(6 / 8)
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert result["roc_auc"] == pytest.approx(12 / 15)  # 5 + 4 + 3 of 15 positive-negative pairs ranked right
    assert result["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)  # precision at ranks 1, 3, 5


def test_binary_threshold_is_inclusive_and_ppv_nan_without_positive_calls() -> None:
    assert binary_metrics([1, 0], [0.5, 0.2], threshold=0.5)["sensitivity"] == 1.0
    result = binary_metrics([1, 0], [0.4, 0.2], threshold=0.9)
    assert np.isnan(result["ppv"]) and result["npv"] == 0.5


def test_binary_auc_perfect_and_random() -> None:
    assert binary_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])["roc_auc"] == 1.0
    rng = np.random.default_rng(0)
    random_auc = binary_metrics(rng.integers(0, 2, 20_000), rng.random(20_000))["roc_auc"]
    assert random_auc == pytest.approx(0.5, abs=0.02)


def test_binary_metrics_refuse_a_single_class() -> None:
    with pytest.raises(ValueError, match="only one class"):
        binary_metrics([1, 1, 1], [0.2, 0.5, 0.9])


# --- bootstrap -------------------------------------------------------------------------------------------


def _noisy_classifier(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, y + rng.normal(0, 1.0, n)


def test_bootstrap_ci_contains_point_and_narrows_with_more_samples() -> None:
    widths = []
    for n in (150, 1500):
        y, scores = _noisy_classifier(n)
        point, low, high = bootstrap_ci(roc_auc_score, y, scores, n_boot=300)
        assert point == pytest.approx(roc_auc_score(y, scores))
        assert low < point < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # ~ 1 / sqrt(10)


def test_bootstrap_ci_is_reproducible_with_a_seed() -> None:
    y, scores = _noisy_classifier(200)
    first = bootstrap_ci(roc_auc_score, y, scores, n_boot=100, seed=3)
    assert first == bootstrap_ci(roc_auc_score, y, scores, n_boot=100, seed=3)
    assert first != bootstrap_ci(roc_auc_score, y, scores, n_boot=100, seed=4)
    assert isinstance(first, ConfidenceInterval)


def test_stratified_bootstrap_keeps_every_class_count() -> None:
    y = np.array([0] * 98 + [1] * 2)
    seen: list[int] = []

    def count_positives(labels: np.ndarray) -> float:
        seen.append(int(labels.sum()))
        return float(labels.mean())

    bootstrap_ci(count_positives, y, n_boot=50, stratify=y)
    assert set(seen) == {2}


def test_bootstrap_skips_undefined_resamples_with_a_warning() -> None:
    y = np.array([1] + [0] * 29)
    scores = np.linspace(1, 0, 30)
    with pytest.warns(UserWarning, match="skipped"):
        point, low, high = bootstrap_ci(roc_auc_score, y, scores, n_boot=200)
    assert point == 1.0 and (low, high) == pytest.approx((1.0, 1.0))


def test_bootstrap_raises_when_metric_never_defined() -> None:
    y = np.array([1] + [0] * 9)

    def needs_two_positives(labels: np.ndarray) -> float:
        if labels.sum() < 2:
            raise ValueError("undefined")
        return 1.0

    with pytest.raises(ValueError, match="undefined"):
        bootstrap_ci(needs_two_positives, y, n_boot=20, stratify=y)


def test_grouped_bootstrap_resamples_whole_groups() -> None:
    group_sizes = [1, 2, 3, 4, 5] * 10
    names = [f"lesion{i}" for i in range(len(group_sizes))]
    groups = np.repeat(names, group_sizes)
    size_of = dict(zip(names, group_sizes, strict=True))
    resampled: list[np.ndarray] = []

    def record(g: np.ndarray) -> float:
        resampled.append(g)
        return 0.0

    bootstrap_ci(record, groups, n_boot=30, groups=groups)
    for sample in resampled:
        names, counts = np.unique(sample, return_counts=True)
        assert all(count % size_of[name] == 0 for name, count in zip(names, counts, strict=True))
    assert any(len(sample) != len(groups) for sample in resampled)  # sizes vary: groups, not images


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # class 6: predicted, absent
def test_fast_bootstrap_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 300)  # class 6 absent: its AUC is undefined
    probs = rng.dirichlet(np.ones(7), 300)
    probs[:50, 0] = probs[:50, 0].round(1)  # ties
    assert rank_auc(labels == 0, probs[:, 0]) == pytest.approx(roc_auc_score(labels == 0, probs[:, 0]))
    assert np.isnan(rank_auc(np.zeros(5, bool), np.arange(5)))
    reference_auc = np.mean([roc_auc_score(labels == k, probs[:, k]) for k in range(6)])
    assert macro_auc(labels, probs) == pytest.approx(reference_auc)
    assert multiclass_metrics(labels, probs)["macro_auc"] == pytest.approx(reference_auc)
    reference_balanced = balanced_accuracy_score(labels, probs.argmax(axis=1))
    assert balanced_accuracy(labels, probs) == pytest.approx(reference_balanced)


def test_grouped_bootstrap_is_not_fooled_by_duplicate_images() -> None:
    y, scores = _noisy_classifier(300, seed=1)
    lesions = np.arange(300)
    _, low, high = bootstrap_ci(roc_auc_score, y, scores, n_boot=400)
    dup = (np.repeat(y, 5), np.repeat(scores, 5))
    _, naive_low, naive_high = bootstrap_ci(roc_auc_score, *dup, n_boot=400)
    _, grouped_low, grouped_high = bootstrap_ci(roc_auc_score, *dup, n_boot=400, groups=np.repeat(lesions, 5))
    assert naive_high - naive_low < 0.6 * (high - low)  # images treated as independent: too narrow
    assert grouped_high - grouped_low == pytest.approx(high - low, rel=0.25)


def test_grouped_stratified_bootstrap_needs_one_class_per_group() -> None:
    with pytest.raises(ValueError, match="constant within each group"):
        bootstrap_ci(np.mean, np.array([0, 1]), stratify=[0, 1], groups=["a", "a"])


def test_bootstrap_machinery_is_fast() -> None:
    y, scores = _noisy_classifier(750)
    y, scores, lesions = np.repeat(y, 2), np.repeat(scores, 2), np.repeat(np.arange(750), 2)  # 1500 images

    def numpy_balanced_accuracy(labels: np.ndarray, s: np.ndarray) -> float:
        predicted = s > 0.5
        return (predicted[labels == 1].mean() + (~predicted[labels == 0]).mean()) / 2

    start = time.perf_counter()
    bootstrap_ci(numpy_balanced_accuracy, y, scores, n_boot=1000, stratify=y, groups=lesions)
    assert time.perf_counter() - start < 5  # the resampling itself; scikit-learn metrics add ~3-7 ms a call


def test_bootstrap_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ci(roc_auc_score, [0, 1, 1], [0.1, 0.2])


# --- comparison table ------------------------------------------------------------------------------------


def test_compare_table_puts_headline_metrics_and_ci_columns_first() -> None:
    results = {
        "baseline": {
            "accuracy": 0.8,
            "balanced_accuracy": ConfidenceInterval(0.6, 0.55, 0.65),
            "per_class": {},
        },
        "finetuned": {"accuracy": 0.85, "balanced_accuracy": 0.7, "extra": np.float32(1.5)},
    }
    table = compare_table(results)
    assert list(table.index) == ["baseline", "finetuned"] and table.index.name == "checkpoint"
    assert list(table.columns) == [
        "balanced_accuracy",
        "balanced_accuracy_low",
        "balanced_accuracy_high",
        "accuracy",
        "extra",
    ]
    assert table.loc["baseline", "balanced_accuracy_low"] == 0.55
    assert np.isnan(table.loc["finetuned", "balanced_accuracy_low"])
    assert np.isnan(table.loc["baseline", "extra"])


def test_compare_table_selects_metrics_and_rejects_unknown() -> None:
    results = {"a": {"accuracy": 0.8, "macro_f1": 0.5}}
    assert list(compare_table(results, metrics=["macro_f1"]).columns) == ["macro_f1"]
    with pytest.raises(ValueError, match="roc_auc"):
        compare_table(results, metrics=["roc_auc"])
