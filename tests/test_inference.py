"""Batched prediction of image files: flip TTA, the model's own input size, sigmoid outputs, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import damage_jpeg_middle, flip_sensitive_model, write_noise_image

from helpers.core.errors import DataError
from helpers.data.pipeline import load_image_array
from helpers.evaluation.inference import read_for_model
from helpers.models.build import build_model
from helpers.models.predict import class_probabilities, model_input_size, predict_batch, predict_probabilities

IMAGE_SIZE = (48, 64)


@pytest.fixture(scope="module")
def frame(tmp_path_factory) -> pd.DataFrame:
    """Ten 60x80 noise images, a size no model here takes."""
    folder = tmp_path_factory.mktemp("images")
    paths = [write_noise_image(folder / f"{index}.png", index, (60, 80)) for index in range(10)]
    return pd.DataFrame({"image_path": [str(path) for path in paths]})


def test_tta_averages_identity_and_both_flips(frame):
    model = flip_sensitive_model(IMAGE_SIZE)
    images = load_image_array(frame["image_path"], IMAGE_SIZE, progress=False).astype("float32")
    views = [images, images[:, :, ::-1], images[:, ::-1]]
    expected = np.mean([model.predict(view, verbose=0) for view in views], axis=0)
    with_tta = predict_probabilities(
        model, frame, input_size=IMAGE_SIZE, batch_size=4, tta=True, progress=False
    )
    without = predict_probabilities(model, frame, input_size=IMAGE_SIZE, tta=False, progress=False)
    np.testing.assert_allclose(with_tta, expected, atol=1e-5)
    np.testing.assert_allclose(without, model.predict(images, verbose=0), atol=1e-5)
    assert not np.allclose(with_tta, without, atol=1e-4)
    np.testing.assert_allclose(predict_batch(model, images, tta=True), expected, atol=1e-5)


def test_images_are_resized_to_the_models_own_input_size(frame):
    model = build_model("simple_cnn", weights=None, input_size=(32, 48))
    assert model_input_size(model) == (32, 48)
    probs = predict_probabilities(model, frame.head(5), progress=False)
    assert probs.shape == (5, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(DataError, match="no images"):
        predict_probabilities(model, frame.head(0))


def test_a_sigmoid_output_becomes_benign_and_malignant_columns():
    np.testing.assert_allclose(class_probabilities(np.array([[0.2], [0.9]])), [[0.8, 0.2], [0.1, 0.9]])
    softmax = np.full((2, 7), 1 / 7)
    np.testing.assert_array_equal(class_probabilities(softmax), softmax)


def test_read_for_model_resizes_or_names_the_unusable_file(frame, tmp_path: Path):
    image = read_for_model(frame["image_path"][0], IMAGE_SIZE)
    assert image.shape == (*IMAGE_SIZE, 3) and image.dtype == np.uint8
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(DataError, match="Unusable image") as error:
        read_for_model(tmp_path / "text.jpg", IMAGE_SIZE)
    assert "text.jpg" in str(error.value)


def test_damaged_jpeg_data_is_unusable_for_prediction_and_evaluation(frame, tmp_path: Path):
    damaged = damage_jpeg_middle(write_noise_image(tmp_path / "a.jpg", 0, (60, 80)), tmp_path / "damaged.jpg")
    with pytest.raises(DataError, match="Unusable image: damaged JPEG data"):
        read_for_model(damaged, IMAGE_SIZE)
    model = build_model("light_cnn", weights=None, input_size=IMAGE_SIZE)
    with pytest.raises(DataError, match="damaged JPEG data"):
        predict_probabilities(model, pd.concat([frame, pd.DataFrame({"image_path": [str(damaged)]})]))
