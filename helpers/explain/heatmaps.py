"""Grad-CAM and gradient saliency maps for any Keras image classifier, flat or with a nested backbone.

Intermediate activations are recorded by temporarily wrapping the chosen layer's ``call`` during one
eager forward pass under a ``tf.GradientTape``; this works for Sequential and functional models and
for backbones nested as sub-models, where slicing the graph fails with "Graph disconnected".
Gradients are taken of the pre-softmax/pre-sigmoid class score (the logit), not of the probability.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from helpers.core.errors import SkinLesionError

PROBABILITY_ACTIVATIONS = frozenset({"softmax", "sigmoid"})
Preprocess = Callable[[tf.Tensor], tf.Tensor]


class ExplainError(SkinLesionError, ValueError):
    """A model, layer name, image or class index that an explanation cannot be computed for."""


# ---------------------------------------------------------------- layer lookup


def _iter_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yield ``(path, layer)`` for every layer, depth first, a nested model before its own layers."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        yield path, layer
        if isinstance(layer, keras.Model):
            yield from _iter_layers(layer, prefix=f"{path}/")


def _output_shape(layer: keras.layers.Layer) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def _is_spatial(layer: keras.layers.Layer) -> bool:
    """True for layers whose output is a (B, H, W, C) map that is not a 1x1 pooled vector."""
    if isinstance(layer, keras.layers.InputLayer):
        return False
    shape = _output_shape(layer)
    return shape is not None and len(shape) == 4 and not (shape[1] == 1 and shape[2] == 1)


def spatial_layer_paths(model: keras.Model) -> list[str]:
    """Paths ("backbone/layer" for nested models) of every layer with a spatial 4-D output, in order."""
    _require_built(model)
    return [path for path, layer in _iter_layers(model) if _is_spatial(layer)]


def find_last_conv_layer(model: keras.Model) -> str:
    """Path of the last layer with a spatial 4-D output, searching into nested sub-models.

    The path is relative to ``model``: ``"out_relu"`` for a flat model,
    ``"mobilenetv2_1.00_224/out_relu"`` when the backbone is a nested sub-model.
    """
    paths = spatial_layer_paths(model)
    if not paths:
        raise ExplainError(
            f"Model {model.name!r} has no layer with a 4-D (batch, height, width, channels) output, "
            "so Grad-CAM has no feature map to weight. Use saliency_map() instead."
        )
    return paths[-1]


def resolve_layer(model: keras.Model, layer_name: str) -> keras.layers.Layer:
    """The layer at a path from :func:`find_last_conv_layer`, or with a bare name unique in the model."""
    matches = [
        (path, layer) for path, layer in _iter_layers(model) if layer_name in (path, path.split("/")[-1])
    ]
    if len(matches) == 1:
        return matches[0][1]
    if matches:
        paths = [path for path, _ in matches]
        raise ExplainError(
            f"Layer name {layer_name!r} is ambiguous in model {model.name!r}; use a path: {paths}"
        )
    candidates = spatial_layer_paths(model)
    shown = ", ".join(candidates[-10:])
    more = f" (and {len(candidates) - 10} earlier ones)" if len(candidates) > 10 else ""
    raise ExplainError(
        f"Model {model.name!r} has no layer {layer_name!r}. "
        f"Layers with a spatial 4-D output, last ones: {shown}{more}. "
        "Fix: pass one of these as layer_name, or leave layer_name=None for the last one."
    )


def _require_built(model: keras.Model) -> None:
    built = model.built and len(getattr(model, "inputs", None) or []) == 1
    if not built or len(model.outputs or []) != 1:
        raise ExplainError(
            f"Model {model.name!r} must be built with exactly one input and one output to be explained. "
            "Fix: build it (keras.Input(...) or model.build(shape)) and explain one output at a time."
        )


def _output_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer producing the model output, descending into a nested model that produces it."""
    history = getattr(model.outputs[0], "_keras_history", None)
    layer = history.operation if history is not None else model.layers[-1]
    return _output_layer(layer) if isinstance(layer, keras.Model) else layer


# ---------------------------------------------------------------- recording a forward pass


@contextlib.contextmanager
def _recording(layers: Sequence[keras.layers.Layer]) -> Iterator[dict[int, list[tuple]]]:
    """Record ``(inputs, outputs)`` of each call of ``layers`` while the context is open."""
    records: dict[int, list[tuple]] = {id(layer): [] for layer in layers}
    patched = []
    try:
        for layer in {id(layer): layer for layer in layers}.values():
            object.__setattr__(layer, "call", _recorder(layer.call, records[id(layer)]))
            patched.append(layer)
        yield records
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")


def _recorder(call: Callable, store: list[tuple]) -> Callable:
    def recording_call(*args, **kwargs):
        outputs = call(*args, **kwargs)
        store.append((args[0] if args else next(iter(kwargs.values())), outputs))
        return outputs

    return recording_call


def _single_record(records: dict[int, list[tuple]], layer: keras.layers.Layer) -> tuple:
    calls = records[id(layer)]
    if len(calls) != 1:
        raise ExplainError(
            f"Layer {layer.name!r} ran {len(calls)} times in one forward pass; "
            "Fix: explain a layer that the model calls exactly once."
        )
    return calls[0]


def _activation_name(layer: keras.layers.Layer) -> str:
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    return getattr(getattr(layer, "activation", None), "__name__", "")


def _logits(head: keras.layers.Layer, head_inputs: tf.Tensor, head_outputs: tf.Tensor) -> tf.Tensor:
    """Pre-activation class scores: the head's input for an Activation/Softmax, x @ W + b for a Dense."""
    if _activation_name(head) not in PROBABILITY_ACTIVATIONS:
        return tf.cast(head_outputs, tf.float32)
    if isinstance(head, keras.layers.Dense):
        scores = tf.matmul(head_inputs, tf.convert_to_tensor(head.kernel))
        if head.use_bias:
            scores = scores + tf.convert_to_tensor(head.bias)
        return tf.cast(scores, tf.float32)
    return tf.cast(head_inputs, tf.float32)


def _forward(
    model: keras.Model, batch: tf.Tensor, feature_layer: keras.layers.Layer | None
) -> tuple[tf.Tensor | None, tf.Tensor, tf.Tensor]:
    """Run the model once; return (feature map or None, logits, model outputs). Call inside a tape."""
    head = _output_layer(model)
    watched = [head] if feature_layer is None else [head, feature_layer]
    with _recording(watched) as records:
        outputs = model(batch, training=False)
    head_inputs, head_outputs = _single_record(records, head)
    features = None if feature_layer is None else _single_record(records, feature_layer)[1]
    return features, _logits(head, head_inputs, head_outputs), outputs


def _gives_probabilities(head: keras.layers.Layer) -> bool:
    """Whether the head outputs probabilities: a softmax or sigmoid, or the mean of such heads (an ensemble
    saved by :mod:`helpers.models.ensemble`), which must not be squashed a second time."""
    if _activation_name(head) in PROBABILITY_ACTIVATIONS:
        return True
    if isinstance(head, keras.layers.Average):
        producers = [tensor._keras_history.operation for tensor in head.input]
        return all(
            _gives_probabilities(_output_layer(op) if isinstance(op, keras.Model) else op) for op in producers
        )
    return False


def _probabilities(head: keras.layers.Layer, logits: tf.Tensor, outputs: tf.Tensor) -> np.ndarray:
    """The model outputs when they are probabilities, else softmax/sigmoid of the logit outputs."""
    if _gives_probabilities(head):
        return np.asarray(outputs, dtype=np.float32)
    squash = tf.sigmoid if logits.shape[-1] == 1 else tf.nn.softmax
    return squash(logits).numpy()


# ---------------------------------------------------------------- class scores


def _predicted_classes(logits: tf.Tensor) -> np.ndarray:
    if logits.shape[-1] == 1:
        return (logits[:, 0].numpy() >= 0).astype(np.int64)  # p(malignant) >= 0.5
    return np.argmax(logits.numpy(), axis=-1).astype(np.int64)


def _checked_classes(class_indices: Sequence[int] | int | None, logits: tf.Tensor) -> np.ndarray:
    predicted = _predicted_classes(logits)
    if class_indices is None:
        return predicted
    chosen = np.broadcast_to(np.asarray(class_indices, dtype=np.int64), predicted.shape).copy()
    n_classes = max(2, logits.shape[-1])
    if chosen.min() < 0 or chosen.max() >= n_classes:
        raise ExplainError(
            f"class index {chosen.tolist()} out of range for a {n_classes}-class model (0..{n_classes - 1})."
        )
    return chosen


def _class_scores(logits: tf.Tensor, classes: np.ndarray) -> tf.Tensor:
    """Logit of each row's class; for one sigmoid unit class 1 is the logit and class 0 its negative."""
    if logits.shape[-1] == 1:
        sign = tf.constant(np.where(classes == 1, 1.0, -1.0), dtype=tf.float32)
        return sign * logits[:, 0]
    return tf.gather(logits, classes, axis=1, batch_dims=1)


# ---------------------------------------------------------------- images and maps


def _as_batch(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ExplainError(f"expected RGB images shaped (H, W, 3) or (N, H, W, 3), got {batch.shape}.")
    return batch


def _single_image(image: np.ndarray) -> np.ndarray:
    if np.ndim(image) != 3:
        raise ExplainError(
            f"expected one RGB image shaped (H, W, 3), got {np.shape(image)}; see gradcam_batch."
        )
    return _as_batch(image)


def _model_input(
    model: keras.Model, batch: np.ndarray | tf.Tensor, preprocess: Preprocess | None
) -> tf.Tensor:
    """Resize the batch to a fixed model input size and apply the optional preprocessing."""
    height, width = tuple(model.inputs[0].shape)[1:3]
    tensor = tf.convert_to_tensor(batch)
    if height is not None and width is not None and (height, width) != tuple(tensor.shape[1:3]):
        tensor = tf.image.resize(tensor, (height, width), method="bilinear")
    return preprocess(tensor) if preprocess is not None else tensor


def _normalised(maps: tf.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Upsample (N, h, w) maps bilinearly to ``size`` and scale each to [0, 1] (all-zero maps stay zero)."""
    resized = tf.image.resize(maps[..., None], size, method="bilinear")[..., 0].numpy()
    resized = np.clip(resized, 0.0, None)
    peaks = resized.max(axis=(1, 2), keepdims=True)
    return np.divide(resized, peaks, out=np.zeros_like(resized), where=peaks > 0).astype(np.float32)


# ---------------------------------------------------------------- Grad-CAM


def gradcam_batch(
    model: keras.Model,
    images: np.ndarray | Sequence[np.ndarray],
    class_indices: Sequence[int] | int | None = None,
    *,
    layer_name: str | None = None,
    batch_size: int = 32,
    preprocess: Preprocess | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM for (N, H, W, 3) images in 0..255: returns heatmaps (N, H, W) in [0, 1], classes, outputs.

    ``class_indices`` defaults to each image's predicted class; ``layer_name`` to the last spatial layer.
    The third result holds the model's probabilities (N, K), or (N, 1) for a single sigmoid unit.
    """
    _require_built(model)
    layer = resolve_layer(model, layer_name or find_last_conv_layer(model))
    head = _output_layer(model)
    batch = _as_batch(images)
    requested = _requested_classes(class_indices, len(batch))
    results = []
    starts = range(0, len(batch), batch_size)
    for start in tqdm(starts, desc="Grad-CAM", unit="batch", disable=len(starts) <= 1):
        chunk = batch[start : start + batch_size]
        chunk_classes = None if requested is None else requested[start : start + batch_size]
        results.append(_gradcam_chunk(model, head, layer, chunk, chunk_classes, preprocess))
    heatmaps, classes, probabilities = (np.concatenate(parts) for parts in zip(*results, strict=True))
    return heatmaps, classes, probabilities


def _requested_classes(class_indices: Sequence[int] | int | None, n_images: int) -> np.ndarray | None:
    """One class index per image (a single index applies to all), or None for the predicted classes."""
    if class_indices is None:
        return None
    requested = np.atleast_1d(np.asarray(class_indices, dtype=np.int64))
    if len(requested) not in (1, n_images):
        raise ExplainError(f"got {len(requested)} class indices for {n_images} images; give one or one each.")
    return np.broadcast_to(requested, (n_images,))


def _gradcam_chunk(model, head, layer, chunk, class_indices, preprocess) -> tuple[np.ndarray, ...]:
    with tf.GradientTape() as tape:
        features, logits, outputs = _forward(model, _model_input(model, chunk, preprocess), layer)
        classes = _checked_classes(class_indices, logits)
        scores = _class_scores(logits, classes)
    if features is None or len(features.shape) != 4:
        raise ExplainError(f"Layer {layer.name!r} does not output a (batch, height, width, channels) map.")
    gradients = tape.gradient(scores, features)
    if gradients is None:
        raise ExplainError(f"The class score does not depend on layer {layer.name!r}; pick an earlier layer.")
    weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * tf.cast(features, tf.float32), axis=-1))
    heatmaps = _normalised(cams, chunk.shape[1:3])
    return heatmaps, classes, _probabilities(head, logits, outputs)


def gradcam(
    model: keras.Model,
    image: np.ndarray,
    *,
    class_index: int | None = None,
    layer_name: str | None = None,
    preprocess: Preprocess | None = None,
) -> tuple[np.ndarray, int, np.ndarray]:
    """Grad-CAM of one (H, W, 3) image in 0..255: (heatmap (H, W) in [0, 1], class used, probabilities)."""
    heatmaps, classes, probabilities = gradcam_batch(
        model, _single_image(image), class_index, layer_name=layer_name, preprocess=preprocess
    )
    return heatmaps[0], int(classes[0]), probabilities[0]


# ---------------------------------------------------------------- saliency


def saliency_map(
    model: keras.Model,
    image: np.ndarray,
    *,
    class_index: int | None = None,
    smooth_samples: int = 0,
    noise_level: float = 0.15,
    seed: int = 0,
    preprocess: Preprocess | None = None,
) -> np.ndarray:
    """Vanilla gradient saliency |d logit / d pixel| (max over channels), (H, W) in [0, 1].

    With ``smooth_samples > 0`` it is SmoothGrad: the mean over that many copies with Gaussian noise of
    standard deviation ``noise_level * 255``.
    """
    _require_built(model)
    batch = _single_image(image)
    if smooth_samples > 0:
        noise = np.random.default_rng(seed).normal(
            0.0, noise_level * 255.0, (smooth_samples, *batch.shape[1:])
        )
        batch = batch + noise.astype(np.float32)
    inputs = tf.convert_to_tensor(batch)
    if class_index is None:
        _, clean_logits, _ = _forward(model, _model_input(model, _single_image(image), preprocess), None)
        class_index = int(_predicted_classes(clean_logits)[0])
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        _, logits, _ = _forward(model, _model_input(model, inputs, preprocess), None)
        scores = _class_scores(logits, _checked_classes(class_index, logits))
    gradients = tf.abs(tape.gradient(scores, inputs))
    saliency = tf.reduce_mean(tf.reduce_max(gradients, axis=-1), axis=0, keepdims=True)
    return _normalised(saliency, batch.shape[1:3])[0]


# ---------------------------------------------------------------- overlays


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heatmap, coloured with ``cmap``, over an RGB 0..255 image; returns RGB uint8."""
    rgb = np.asarray(image, dtype=np.float32)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != rgb.shape[:2]:
        heat = _normalised(tf.convert_to_tensor(heat[None]), rgb.shape[:2])[0]
    coloured = matplotlib.colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    return np.clip((1.0 - alpha) * rgb + alpha * coloured, 0, 255).astype(np.uint8)
