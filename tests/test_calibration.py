"""Calibration error, reliability curves and temperature scaling on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.metrics import log_loss

from helpers.evaluation.calibration import (
    apply_temperature,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    logits_from_probs,
    reliability_curve,
)


def _sample_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row drawn from that row's class probabilities."""
    return (probs.cumsum(axis=1) < rng.random((len(probs), 1))).sum(axis=1)


def test_ece_matches_hand_computation() -> None:
    probs = np.array([[0.85, 0.1, 0.05], [0.85, 0.1, 0.05], [0.2, 0.65, 0.15], [0.3, 0.25, 0.45]])
    y = [0, 1, 1, 2]
    # bins of width 0.1: (0.8, 0.9] holds 2 at conf 0.85 with acc 0.5; (0.6, 0.7] conf 0.65 acc 1;
    # (0.4, 0.5] conf 0.45 acc 1
    expected = (2 * 0.35 + 1 * 0.35 + 1 * 0.55) / 4
    assert expected_calibration_error(y, probs, n_bins=10) == pytest.approx(expected)
    confidence, accuracy, count = reliability_curve(y, probs, n_bins=10)
    np.testing.assert_array_equal(count, [0, 0, 0, 0, 1, 0, 1, 0, 2, 0])
    np.testing.assert_allclose(confidence[[4, 6, 8]], [0.45, 0.65, 0.85])
    np.testing.assert_allclose(accuracy[[4, 6, 8]], [1.0, 1.0, 0.5])
    assert np.isnan(confidence[0]) and np.isnan(accuracy[0])


def test_ece_of_perfectly_calibrated_binary_set_is_near_zero() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, p.reshape(-1, 1)) == expected_calibration_error(y, p)


def test_ece_of_overconfident_predictions_is_large() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 10_000)
    probs = np.full((10_000, 4), 0.02)
    probs[np.arange(10_000), rng.integers(0, 4, 10_000)] = 0.94  # 94 % confident, 25 % right
    assert expected_calibration_error(y, probs) == pytest.approx(0.94 - 0.25, abs=0.02)


def test_ece_rejects_logits() -> None:
    with pytest.raises(ValueError, match="logits"):
        expected_calibration_error([0, 1], np.array([[2.0, -1.0], [0.5, 3.0]]))


def test_temperature_scaling_recovers_known_temperature_and_improves_calibration() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(20_000, 7))
    y = _sample_labels(softmax(logits / 2.5, axis=1), rng)
    temperature = fit_temperature(logits, y)
    assert temperature == pytest.approx(2.5, rel=0.05)
    raw, scaled = apply_temperature(logits, 1.0), apply_temperature(logits, temperature)
    assert log_loss(y, scaled, labels=range(7)) < log_loss(y, raw, labels=range(7))
    assert expected_calibration_error(y, scaled) < 0.02 < expected_calibration_error(y, raw)


def test_temperature_fits_from_probabilities_as_well_as_logits() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(5_000, 5))
    y = _sample_labels(softmax(logits / 1.8, axis=1), rng)
    from_probs = fit_temperature(logits_from_probs(softmax(logits, axis=1)), y)
    assert from_probs == pytest.approx(fit_temperature(logits, y), rel=1e-3)


def test_binary_temperature_uses_sigmoid() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 4, size=20_000)
    y = (rng.random(20_000) < expit(logits / 2.0)).astype(int)
    assert fit_temperature(logits, y) == pytest.approx(2.0, rel=0.05)
    assert fit_temperature(logits.reshape(-1, 1), y) == pytest.approx(fit_temperature(logits, y))
    column = apply_temperature(logits.reshape(-1, 1), 2.0)
    assert column.shape == (20_000, 1)
    np.testing.assert_allclose(column[:, 0], expit(logits / 2.0))


def test_logits_from_probs_is_temperature_scaling_of_original_logits() -> None:
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    np.testing.assert_allclose(
        apply_temperature(logits_from_probs(softmax(logits, axis=1)), 3.0), softmax(logits / 3.0, axis=1)
    )
    p = np.array([0.1, 0.5, 0.97])
    np.testing.assert_allclose(apply_temperature(logits_from_probs(p), 1.0), p)


def test_calibrate_scales_probabilities_and_keeps_the_argmax() -> None:
    probs = np.random.default_rng(1).dirichlet(np.ones(7), 20)
    for temperature in (0.5, 2.0):
        assert (calibrate(probs, temperature).argmax(1) == probs.argmax(1)).all()
    np.testing.assert_allclose(calibrate(probs, 1.0), probs, atol=1e-6)
    np.testing.assert_allclose(calibrate(probs, 1e3), 1 / 7, atol=1e-3)  # very high T: uniform


def test_fit_temperature_warns_at_search_bound() -> None:
    logits = np.array([[5.0, -5.0], [-5.0, 5.0]] * 10)
    with pytest.warns(UserWarning, match="search bound"):
        fit_temperature(logits, [0, 1] * 10)  # perfectly separated: NLL keeps falling as T -> 0


def test_temperature_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(np.zeros((2, 3)), 0.0)
    with pytest.raises(ValueError, match="labels must lie"):
        fit_temperature(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="2 labels but 3"):
        fit_temperature(np.zeros((3, 3)), [0, 1])
