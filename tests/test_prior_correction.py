"""Prior correction: class frequencies, the bias they give, applying it and fitting its strength."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from helpers.evaluation.calibration import calibrate
from helpers.evaluation.metrics import balanced_accuracy, malignant_probability
from helpers.evaluation.operating_point import (
    DEFAULT_STRENGTHS,
    apply_class_bias,
    class_frequencies,
    fit_prior_strength,
    prior_bias,
    reported_probabilities,
    threshold_for_sensitivity,
    tune_operating_point,
)

CLASSES = ("bcc", "nv", "mel")
FOUR_CLASSES = ("mel", "nv", "df", "bcc")
"""Malignant: mel and bcc (index 0 and 3); nv common, df rare."""


def test_class_frequencies_are_smoothed_so_absent_classes_stay_positive() -> None:
    frequencies = class_frequencies([0, 0, 0, 1], n_classes=3)
    np.testing.assert_allclose(frequencies, [4 / 7, 2 / 7, 1 / 7])
    with pytest.raises(ValueError):
        class_frequencies([0, 3], n_classes=3)


def test_prior_bias_favours_rare_classes_and_vanishes_at_strength_zero() -> None:
    frequencies = np.array([0.7, 0.2, 0.1])
    bias = prior_bias(frequencies, 0.5)
    assert bias[2] > bias[1] > bias[0] and bias.mean() == pytest.approx(0)
    np.testing.assert_allclose(bias[2] - bias[0], 0.5 * np.log(7))
    np.testing.assert_allclose(prior_bias(frequencies, 0.0), 0)


def test_apply_class_bias_reweights_and_renormalises() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    bias = np.log([1.0, 1.0, 3.0])
    expected = probs * [1, 1, 3] / (probs * [1, 1, 3]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(apply_class_bias(probs, bias), expected)
    np.testing.assert_allclose(apply_class_bias(probs, None), probs)
    with pytest.raises(ValueError, match="K biases"):
        apply_class_bias(probs, [0.0, 1.0])


def _under_confident_on_rare_class(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """900 common and 100 rare samples; the model's logit for the rare class is 1 too low."""
    labels = np.repeat([0, 1], [900, 100])
    logits = rng.normal(0, 1, (labels.size, 2))
    logits[np.arange(labels.size), labels] += 1.5
    logits[:, 1] -= 1.0
    return labels, softmax(logits, axis=1)


def test_fit_prior_strength_corrects_a_model_biased_against_the_rare_class() -> None:
    labels, probs = _under_confident_on_rare_class(np.random.default_rng(0))
    frequencies = class_frequencies(labels, 2)
    strength = fit_prior_strength(labels, probs, frequencies)
    assert strength in DEFAULT_STRENGTHS and strength > 0
    corrected = apply_class_bias(probs, prior_bias(frequencies, strength))
    assert balanced_accuracy(labels, corrected) > balanced_accuracy(labels, probs) + 0.02

    fresh_labels, fresh_probs = _under_confident_on_rare_class(np.random.default_rng(1))
    held_out = apply_class_bias(fresh_probs, prior_bias(frequencies, strength))
    assert balanced_accuracy(fresh_labels, held_out) > balanced_accuracy(fresh_labels, fresh_probs)


def test_fit_prior_strength_leaves_a_perfect_model_alone() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 5])
    probs = np.full((labels.size, 3), 0.05)
    probs[np.arange(labels.size), labels] = 0.9
    assert fit_prior_strength(labels, probs, class_frequencies(labels, 3)) == 0.0


def test_reported_class_probabilities_scale_the_temperature_then_add_the_bias() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    point = {"temperature": 1.8, "class_bias": [0.0, 0.2, 0.9], "malignant_after_bias": False}
    reported, _ = reported_probabilities(probs, point, CLASSES)
    np.testing.assert_allclose(reported, apply_class_bias(calibrate(probs, 1.8), point["class_bias"]))
    no_correction = {"temperature": 1.0, "class_bias": None, "malignant_after_bias": False}
    unchanged, _ = reported_probabilities(probs, no_correction, CLASSES)
    np.testing.assert_allclose(unchanged, probs, atol=1e-9)


def test_p_malignant_is_summed_before_the_class_bias_which_would_reorder_images() -> None:
    """Image 0 leans to the rare benign class, image 1 to the common one; with equal malignant shares the
    bias (up for rare, down for common classes) would rank image 1 as more malignant than image 0."""
    probs = np.array([[0.5, 0.0, 0.4, 0.1], [0.5, 0.4, 0.0, 0.1]]) + 1e-3
    probs /= probs.sum(axis=1, keepdims=True)
    point = {"temperature": 1.0, "class_bias": [0.0, -1.0, 1.0, 0.0], "malignant_after_bias": False}
    _, p_malignant = reported_probabilities(probs, point, FOUR_CLASSES)
    np.testing.assert_allclose(p_malignant, probs[:, [0, 3]].sum(axis=1))
    assert p_malignant[0] == pytest.approx(p_malignant[1])
    _, after_bias = reported_probabilities(probs, point | {"malignant_after_bias": True}, FOUR_CLASSES)
    assert after_bias[1] > after_bias[0] + 0.1


def test_the_threshold_is_tuned_on_p_malignant_before_the_fitted_class_bias() -> None:
    """Imbalanced labels (nv common) give a non-zero bias; the threshold must be the one for P(malignant)
    summed from the temperature-scaled probabilities, which is what reported_probabilities returns."""
    rng = np.random.default_rng(3)
    labels = rng.choice(4, size=600, p=[0.15, 0.7, 0.05, 0.1])
    logits = rng.normal(size=(600, 4)) + 1.2 * np.eye(4)[labels] + np.log([0.15, 0.7, 0.05, 0.1])
    probs = softmax(logits, axis=1)
    malignant = np.isin(labels, [0, 3]).astype(int)
    point = tune_operating_point(labels, malignant, probs, FOUR_CLASSES, target_sensitivity=0.9)
    assert np.abs(point["class_bias"]).max() > 0.1 and point["malignant_after_bias"] is False
    before_bias = malignant_probability(calibrate(probs, point["temperature"]), FOUR_CLASSES)
    assert point["threshold"] == threshold_for_sensitivity(malignant, before_bias, 0.9)
    _, reported = reported_probabilities(probs, point, FOUR_CLASSES)
    np.testing.assert_allclose(reported, before_bias)
