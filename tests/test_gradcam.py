"""Grad-CAM and saliency on flat, nested (Sequential and functional), reloaded .h5 and binary models."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from helpers.explain import heatmaps as gc  # noqa: E402
from helpers.models.build import build_model  # noqa: E402

HEIGHT, WIDTH = 32, 48


def colour_image() -> np.ndarray:
    """Grey image with a pure red block in the left half and a pure green block in the right half."""
    image = np.full((HEIGHT, WIDTH, 3), 128.0, dtype=np.float32)
    image[8:24, 4:18] = (255, 0, 0)
    image[8:24, 30:44] = (0, 255, 0)
    return image


def left_share(heatmap: np.ndarray) -> float:
    return float(heatmap[:, : heatmap.shape[1] // 2].sum() / heatmap.sum())


def colour_backbone(n_colours: int = 3, name: str = "colour_features") -> keras.layers.Conv2D:
    """1x1 conv whose filter k fires on pure colour channel k (2*c_k - others) and is 0 on grey."""
    conv = keras.layers.Conv2D(n_colours, 1, activation="relu", name=name)
    conv.build((None, HEIGHT, WIDTH, 3))
    kernel = np.full((1, 1, 3, n_colours), -1.0, dtype=np.float32)
    for k in range(n_colours):
        kernel[0, 0, k, k] = 2.0
    conv.set_weights([kernel, np.zeros(n_colours, np.float32)])
    return conv


def colour_head(layout: str, units: int = 3, weights: np.ndarray | None = None) -> list[keras.layers.Layer]:
    """Pooling + classifier in one of the three usual output layouts, logits = weights (default identity)."""
    dense = keras.layers.Dense(units, name="logits" if layout != "dense_softmax" else "predictions")
    dense.build((None, 3 if weights is None else weights.shape[0]))
    kernel = np.eye(3, units, dtype=np.float32) if weights is None else weights.astype(np.float32)
    dense.set_weights([kernel, np.zeros(units, np.float32)])
    activation = "sigmoid" if units == 1 else "softmax"
    if layout == "dense_softmax":
        dense.activation = keras.activations.get(activation)
        return [keras.layers.GlobalAveragePooling2D(), dense]
    if layout == "logits_activation":
        return [keras.layers.GlobalAveragePooling2D(), dense, keras.layers.Activation(activation)]
    return [keras.layers.GlobalAveragePooling2D(), dense]


def flat_colour_model(layout: str = "dense_softmax") -> keras.Model:
    inputs = keras.Input((HEIGHT, WIDTH, 3))
    x = colour_backbone()(inputs)
    for layer in colour_head(layout):
        x = layer(x)
    return keras.Model(inputs, x, name=f"flat_{layout}")


def nested_colour_backbone() -> keras.Model:
    inputs = keras.Input((HEIGHT, WIDTH, 3))
    return keras.Model(inputs, colour_backbone()(inputs), name="backbone")


@pytest.fixture(scope="module")
def mobilenet_models() -> dict[str, keras.Model]:
    """A MobileNetV2 (weights=None, 96x96) backbone nested in a Sequential and in a functional model."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False, weights=None)
    sequential = keras.Sequential(
        [
            keras.Input((96, 96, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(7, "softmax"),
        ]
    )
    inputs = keras.Input((96, 96, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(base(inputs))
    functional = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(pooled))
    return {"base": base, "sequential": sequential, "functional": functional}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (96, 96, 3)).astype(np.float32)


# ---------------------------------------------------------------- class-specific maps, output layouts


@pytest.mark.parametrize("layout", ["dense_softmax", "logits_activation", "logits_only"])
def test_each_class_map_sits_on_its_own_evidence(layout: str) -> None:
    model = flat_colour_model(layout)
    red_map, red_class, probabilities = gc.gradcam(model, colour_image(), class_index=0)
    green_map, _, _ = gc.gradcam(model, colour_image(), class_index=1)
    assert red_map.shape == green_map.shape == (HEIGHT, WIDTH)
    assert red_map.min() >= 0 and red_map.max() == pytest.approx(1.0)
    assert red_class == 0 and probabilities.shape == (3,) and probabilities.sum() == pytest.approx(1.0)
    assert left_share(red_map) > 0.9
    assert left_share(green_map) < 0.1


def test_all_output_layouts_use_the_logit_so_saturated_softmax_still_explains() -> None:
    image = np.full((HEIGHT, WIDTH, 3), 128.0, np.float32)
    image[:, :24] = (255, 0, 0)  # red everywhere on the left: p(red) rounds to exactly 1.0
    maps = []
    for layout in ("dense_softmax", "logits_activation", "logits_only"):
        heatmap, class_index, probabilities = gc.gradcam(flat_colour_model(layout), image)
        assert class_index == 0 and probabilities[0] == pytest.approx(1.0)
        maps.append(heatmap)
    assert maps[0].std() > 0.1  # the probability gradient is 0 here; the logit gradient is not
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-5)
    np.testing.assert_allclose(maps[0], maps[2], atol=1e-5)


def test_default_class_is_the_predicted_one() -> None:
    image = colour_image()
    image[8:24, 30:44] = 128.0  # only red evidence left
    _, class_index, probabilities = gc.gradcam(flat_colour_model(), image)
    assert class_index == int(np.argmax(probabilities)) == 0


# ---------------------------------------------------------------- nested backbones


def test_nested_sequential_and_functional_match_the_flat_model() -> None:
    flat_maps = [gc.gradcam(flat_colour_model(), colour_image(), class_index=c)[0] for c in (0, 1)]
    backbone = nested_colour_backbone()
    sequential = keras.Sequential([backbone, *colour_head("dense_softmax")])
    inputs = keras.Input((HEIGHT, WIDTH, 3))
    x = backbone(inputs)
    for layer in colour_head("logits_activation"):
        x = layer(x)
    functional = keras.Model(inputs, x)
    for model in (sequential, functional):
        assert gc.find_last_conv_layer(model) == "backbone/colour_features"
        for class_index, expected in zip((0, 1), flat_maps, strict=True):
            heatmap, _, _ = gc.gradcam(model, colour_image(), class_index=class_index)
            np.testing.assert_allclose(heatmap, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_nested_mobilenet_matches_a_hand_computed_gradcam(mobilenet_models, photo, kind: str) -> None:
    model, base = mobilenet_models[kind], mobilenet_models["base"]
    assert gc.find_last_conv_layer(model) == f"{base.name}/out_relu"
    heatmap, class_index, probabilities = gc.gradcam(model, photo)
    assert heatmap.shape == photo.shape[:2]
    assert 0.0 <= heatmap.min() and heatmap.max() == pytest.approx(1.0) and heatmap.std() > 0.01
    assert class_index == int(np.argmax(probabilities))

    dense = model.layers[-1]
    with tf.GradientTape() as tape:
        features = base(photo[None], training=False)
        logits = tf.reduce_mean(features, axis=(1, 2)) @ dense.kernel + dense.bias
        score = logits[0, class_index]
    weights = tf.reduce_mean(tape.gradient(score, features), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
    expected = tf.image.resize(cam, photo.shape[:2])[0, ..., 0].numpy()
    np.testing.assert_allclose(heatmap, expected / expected.max(), atol=1e-4)


def test_named_layer_by_bare_name_or_path(mobilenet_models, photo) -> None:
    model, base = mobilenet_models["sequential"], mobilenet_models["base"]
    by_name, _, _ = gc.gradcam(model, photo, layer_name="block_13_expand_relu")
    by_path, _, _ = gc.gradcam(model, photo, layer_name=f"{base.name}/block_13_expand_relu")
    default, _, _ = gc.gradcam(model, photo)
    np.testing.assert_allclose(by_name, by_path)
    assert by_name.shape == photo.shape[:2] and not np.allclose(by_name, default)


def test_unknown_layer_name_lists_candidates(mobilenet_models, photo) -> None:
    with pytest.raises(gc.ExplainError, match=r"no layer 'Conv_99'.*out_relu.*Fix"):
        gc.gradcam(mobilenet_models["functional"], photo, layer_name="Conv_99")


def test_reloaded_h5_model_gives_the_same_map(mobilenet_models, photo, tmp_path) -> None:
    model = mobilenet_models["sequential"]
    model.save(tmp_path / "model.h5")
    reloaded = keras.models.load_model(tmp_path / "model.h5", compile=False)
    original, class_index, _ = gc.gradcam(model, photo)
    again, again_class, _ = gc.gradcam(reloaded, photo)
    assert again_class == class_index
    np.testing.assert_allclose(again, original, atol=1e-4)


def test_build_model_saved_and_reloaded(tmp_path) -> None:
    model = build_model("mobilenetv2", input_size=(96, 128), weights=None)
    model.save(tmp_path / "built.h5")
    reloaded = keras.models.load_model(tmp_path / "built.h5", compile=False)
    image = np.random.default_rng(1).uniform(0, 255, (150, 200, 3)).astype(np.float32)
    assert gc.find_last_conv_layer(reloaded) == "out_relu"
    heatmap, class_index, probabilities = gc.gradcam(reloaded, image)
    assert heatmap.shape == (150, 200) and 0 <= heatmap.min() and heatmap.max() == pytest.approx(1.0)
    assert probabilities.shape == (7,) and probabilities.sum() == pytest.approx(1.0) and 0 <= class_index < 7
    binary = build_model("simple_cnn", task="binary", input_size=(64, 64), weights=None)
    malignant_map, _, probability = gc.gradcam(binary, image, class_index=1)
    assert malignant_map.shape == (150, 200) and probability.shape == (1,)


# ---------------------------------------------------------------- binary, batch, sizes, errors


def test_binary_sigmoid_class_one_is_the_logit_and_class_zero_its_negative() -> None:
    inputs = keras.Input((HEIGHT, WIDTH, 3))
    x = colour_backbone(n_colours=2)(inputs)
    for layer in colour_head("dense_softmax", units=1, weights=np.array([[1.0], [-1.0]])):
        x = layer(x)
    model = keras.Model(inputs, x)
    malignant_map, _, probability = gc.gradcam(model, colour_image(), class_index=1)
    benign_map, _, _ = gc.gradcam(model, colour_image(), class_index=0)
    assert probability.shape == (1,)
    assert left_share(malignant_map) > 0.9 and left_share(benign_map) < 0.1
    with pytest.raises(gc.ExplainError, match="out of range"):
        gc.gradcam(model, colour_image(), class_index=2)


def test_batch_matches_single_images_and_resizes_to_each_image() -> None:
    model = flat_colour_model()
    big = np.repeat(np.repeat(colour_image(), 2, axis=0), 2, axis=1)  # 64x96: model input is 32x48
    images = np.stack([big, big[:, ::-1], big])
    heatmaps, classes, probabilities = gc.gradcam_batch(model, images, [0, 0, 1], batch_size=2)
    assert heatmaps.shape == (3, 64, 96) and classes.tolist() == [0, 0, 1] and probabilities.shape == (3, 3)
    assert left_share(heatmaps[0]) > 0.9 and left_share(heatmaps[1]) < 0.1 and left_share(heatmaps[2]) < 0.1
    single, _, _ = gc.gradcam(model, images[1], class_index=0)
    np.testing.assert_allclose(heatmaps[1], single, atol=1e-6)


def test_bad_image_shape_or_class_count_is_a_clear_error() -> None:
    with pytest.raises(gc.ExplainError, match=r"\(H, W, 3\)"):
        gc.gradcam(flat_colour_model(), np.zeros((HEIGHT, WIDTH)))
    with pytest.raises(gc.ExplainError, match="2 class indices for 3 images"):
        gc.gradcam_batch(flat_colour_model(), np.stack([colour_image()] * 3), [0, 1])


def test_model_without_spatial_layer_is_a_clear_error() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(gc.ExplainError, match="saliency_map"):
        gc.find_last_conv_layer(model)


# ---------------------------------------------------------------- saliency


def test_saliency_marks_only_the_pixels_the_class_logit_reads() -> None:
    model = flat_colour_model()
    red = gc.saliency_map(model, colour_image(), class_index=0)
    green = gc.saliency_map(model, colour_image(), class_index=1)
    assert red.shape == (HEIGHT, WIDTH) and red.min() >= 0 and red.max() == pytest.approx(1.0)
    assert left_share(red) > 0.99 and left_share(green) < 0.01


def test_smoothgrad_on_nested_mobilenet(mobilenet_models, photo) -> None:
    saliency = gc.saliency_map(mobilenet_models["functional"], photo, smooth_samples=4)
    assert saliency.shape == photo.shape[:2]
    assert saliency.min() >= 0 and saliency.max() == pytest.approx(1.0) and saliency.std() > 0.01


# ---------------------------------------------------------------- overlay and figure


def test_overlay_blends_and_keeps_the_image_size() -> None:
    image = colour_image().astype(np.uint8)
    heatmap = np.linspace(0, 1, HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)
    assert np.array_equal(gc.overlay(image, heatmap, alpha=0.0), image)
    blended = gc.overlay(image, heatmap[::2, ::2], alpha=0.5)
    assert blended.dtype == np.uint8 and blended.shape == image.shape and not np.array_equal(blended, image)
