"""Class weights: hand-computed balanced and sqrt weights, absent classes, binary labels and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers.core.errors import DataError
from helpers.training.losses import class_weights


def test_balanced_weights_match_hand_computation() -> None:
    # 6 images: 3 of class 0, 2 of class 1, 1 of class 2 -> n / (k * count) = 6/9, 6/6, 6/3.
    weights = class_weights([0, 0, 0, 1, 1, 2], "balanced", num_classes=3)
    assert weights == pytest.approx({0: 2 / 3, 1: 1.0, 2: 2.0})


def test_sqrt_weights_match_hand_computation() -> None:
    # counts 3 and 1: raw 1/sqrt(3) and 1, scaled so that 3 * w0 + 1 * w1 = 4 images.
    scale = 4 / (3 / math.sqrt(3) + 1)
    weights = class_weights([0, 0, 0, 1], "sqrt", num_classes=2)
    assert weights == pytest.approx({0: scale / math.sqrt(3), 1: scale})


@pytest.mark.parametrize("mode", ["balanced", "sqrt"])
def test_mean_weight_per_image_is_one(mode: str) -> None:
    labels = np.random.default_rng(0).integers(0, 7, 500)
    weights = class_weights(labels, mode)
    assert np.mean([weights[label] for label in labels]) == pytest.approx(1.0)


def test_none_mode_returns_none() -> None:
    assert class_weights([0, 1, 1], "none") is None


def test_absent_classes_get_no_entry() -> None:
    weights = class_weights([0, 0, 5], "balanced", num_classes=7)
    assert set(weights) == {0, 5}
    assert weights[5] == pytest.approx(3 / 2)


def test_binary_float_labels() -> None:
    weights = class_weights(np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32), "balanced", num_classes=2)
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})


def test_unknown_label_raises_clear_error() -> None:
    with pytest.raises(DataError, match="label -1"):
        class_weights([0, -1, 2], "balanced")


def test_empty_labels_and_unknown_mode_raise() -> None:
    with pytest.raises(DataError, match="no training labels"):
        class_weights([], "balanced")
    with pytest.raises(ValueError, match="class weighting mode"):
        class_weights([0, 1], "inverse")
