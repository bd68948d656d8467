"""helpers.models.build: every architecture builds flat, preprocesses inside, exposes its named parts."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from helpers.core.errors import CheckpointError, DownloadError
from helpers.models import build as models

HEAVY = {"resnet50", "densenet121", "vgg16", "inceptionv3"}
SIZES = {"inceptionv3": (75, 75)}
MOBILENET_V2_WEIGHTS = "models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
MOBILENET_V3_WEIGHTS = "weights/mobilenet_v3_small_1.0_224_imagenet_no_top.h5"


def _arch_params(archs):
    return [pytest.param(arch, marks=pytest.mark.slow) if arch in HEAVY else arch for arch in archs]


def _images(size: tuple[int, int], count: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, size=(count, *size, 3)).astype("float32")


@pytest.mark.parametrize("task", ["multiclass", "binary"])
@pytest.mark.parametrize("arch", _arch_params(models.ARCHITECTURES))
def test_every_architecture_builds_flat_with_named_parts(arch, task):
    size = SIZES.get(arch, (64, 64))
    model = models.build_model(arch, task=task, num_classes=5, input_size=size, weights=None)

    probabilities = keras.ops.convert_to_numpy(model(_images(size), training=False))
    assert probabilities.shape == ((2, 5) if task == "multiclass" else (2, 1))
    assert np.all(np.isfinite(probabilities)) and np.all((probabilities >= 0) & (probabilities <= 1))
    if task == "multiclass":
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert all(isinstance(op, keras.layers.Layer) for op in model.operations)
    assert isinstance(model.get_layer("features"), keras.layers.GlobalAveragePooling2D)
    assert model.get_layer("logits").units == (5 if task == "multiclass" else 1)
    assert len(models.backbone_layers(model)[-2].output.shape) == 4  # a spatial map before pooling


def test_head_layers_and_names():
    model = models.build_model("light_cnn", weights=None, input_size=(64, 64), batch_norm=True)
    head_names = [layer.name for layer in models.head_layers(model)]
    assert head_names == ["head_batch_norm", "head_dense", "head_dropout", "logits", "probabilities"]
    assert model.get_layer("head_dense").units == 256
    assert models.backbone_layers(model)[-1].name == "features"
    plain = models.build_model("mobilenetv2", weights=None, input_size=(64, 64), dropout=0.0, dense_units=0)
    assert [layer.name for layer in models.head_layers(plain)] == ["logits", "probabilities"]
    assert models.backbone_layers(plain)[-2].name == "out_relu"


@pytest.mark.parametrize(
    ("arch", "preprocess_input"),
    [
        ("mobilenetv2", keras.applications.mobilenet_v2.preprocess_input),
        ("mobilenetv3small", keras.applications.mobilenet_v3.preprocess_input),
        ("vgg16", keras.applications.vgg16.preprocess_input),
        pytest.param("densenet121", keras.applications.densenet.preprocess_input, marks=pytest.mark.slow),
    ],
)
def test_preprocessing_inside_matches_keras_applications(arch, preprocess_input, tmp_path):
    """Raw 0..255 RGB into our model == keras's preprocess_input + the stock application, same weights."""
    size = (32, 32)
    reference = models.ARCHITECTURES[arch].application(
        include_top=False, weights=None, input_shape=(*size, 3)
    )
    weights_file = tmp_path / f"{arch}.h5"
    reference.save(weights_file)
    model = models.build_model(arch, weights=str(weights_file), input_size=size)

    images = _images(size)
    expected = keras.ops.mean(reference(preprocess_input(images.copy()), training=False), axis=(1, 2))
    actual = models.feature_extractor(model)(images, training=False)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_preprocessing_layer_scales_raw_pixels():
    model = models.build_model("mobilenetv2", weights=None, input_size=(32, 32))
    preprocess = model.get_layer("preprocess")
    scaled = keras.ops.convert_to_numpy(preprocess(np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")))
    np.testing.assert_allclose(scaled.ravel(), [-1.0, 0.0, 1.0], atol=1e-6)


def test_head_model_shares_weights_and_trains_the_full_model():
    model = models.build_model("light_cnn", weights=None, input_size=(64, 64), dropout=0.0)
    head = models.head_model(model)
    images = _images((64, 64))
    features = models.feature_extractor(model)(images, training=False)
    np.testing.assert_allclose(head(features), model(images, training=False), rtol=1e-5, atol=1e-6)

    before = keras.ops.convert_to_numpy(model.get_layer("logits").kernel).copy()
    head.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    head.fit(keras.ops.convert_to_numpy(features), np.array([0, 3]), epochs=1, verbose=0)
    after = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(head(features), model(images, training=False), rtol=1e-5, atol=1e-6)


def test_set_backbone_trainable_keeps_batch_norm_frozen():
    model = models.build_model("mobilenetv2", weights=None, input_size=(64, 64))
    backbone = models.backbone_layers(model)

    models.set_backbone_trainable(model, True)
    assert all(layer.trainable != isinstance(layer, keras.layers.BatchNormalization) for layer in backbone)
    assert all(layer.trainable for layer in models.head_layers(model))

    models.set_backbone_trainable(model, True, top_n=10)
    unfrozen = [layer for layer in backbone if layer.trainable]
    assert unfrozen and all(layer in backbone[-10:] for layer in unfrozen)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in unfrozen)

    models.set_backbone_trainable(model, False)
    assert not any(layer.trainable for layer in backbone)
    assert all(layer.trainable for layer in models.head_layers(model))


def test_scratch_models_refuse_pretrained_weights():
    with pytest.raises(ValueError, match="weights=None"):
        models.build_model("simple_cnn", weights="imagenet", input_size=(64, 64))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "alexnet"}, "Unknown architecture"),
        ({"arch": "light_cnn", "task": "regression"}, "Unknown task"),
        ({"arch": "inceptionv3", "input_size": (64, 64)}, ">= 75"),
        ({"arch": "light_cnn", "num_classes": 1}, "num_classes"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.build_model(**{"weights": None, "input_size": (96, 96), **kwargs})


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        models.build_model("mobilenetv2", weights=tmp_path / "nope.h5", input_size=(64, 64))


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    other = models.build_model("light_cnn", weights=None, input_size=(64, 64))
    other.save(tmp_path / "other.h5")
    with pytest.raises(CheckpointError, match="Could not load backbone weights"):
        models.build_model("mobilenetv2", weights=tmp_path / "other.h5", input_size=(64, 64))


def test_offline_imagenet_download_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/vgg16.h5: None -- no network")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(DownloadError, match="KERAS_HOME"):
        models.build_model("vgg16", weights="imagenet", input_size=(32, 32))


def _kernel_in_weights_file(path: Path, layer_name: str) -> np.ndarray:
    with h5py.File(path, "r") as file:
        return file[layer_name][layer_name]["kernel"][()]


@pytest.mark.real_data
@pytest.mark.parametrize("size", [(150, 200), (224, 224)])
def test_mobilenetv2_imagenet_weights_load_offline(keras_home, size):
    configured = os.environ.get("KERAS_HOME")
    if not configured or Path(configured).resolve() != keras_home.resolve():
        reason = (
            f"KERAS_HOME must be {keras_home} when Keras is imported (.ci/run exports it); got {configured}"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    model = models.build_model("mobilenetv2", weights="imagenet", input_size=size)
    expected = _kernel_in_weights_file(keras_home / MOBILENET_V2_WEIGHTS, "Conv1")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("Conv1").kernel), expected)
    assert not any(layer.trainable for layer in models.backbone_layers(model))


@pytest.mark.real_data
def test_mobilenetv3small_weights_load_by_path(keras_home):
    weights = keras_home / MOBILENET_V3_WEIGHTS
    model = models.build_model("mobilenetv3small", weights=weights, input_size=(150, 200))
    expected = _kernel_in_weights_file(weights, "conv")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("conv").kernel), expected)
