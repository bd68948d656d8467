"""Model builders: flat, self-contained Keras classifiers (ImageNet backbones or small from-scratch CNNs).

Every model takes raw RGB images in 0..255, does its backbone's preprocessing inside the graph with
serialisable built-in layers (so a saved ``.h5`` loads anywhere with ``keras.models.load_model``), and
names its pooled features ``features``, its pre-activation outputs ``logits`` and its head layers
``head_*`` so Grad-CAM, temperature scaling and the cached-features training path can find them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import keras
import numpy as np
from keras import layers

from helpers.core.config import CLASS_NAMES, DEFAULT_IMAGE_SIZE, TASKS
from helpers.core.errors import CheckpointError, DownloadError

_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


@dataclass(frozen=True)
class Architecture:
    """How to build one backbone: its keras.applications constructor (None: from scratch) and preprocessing.

    ``preprocessing`` is the ``keras.applications`` mode the backbone was trained with: "tf" ([-1, 1]),
    "torch" (ImageNet mean/std), "caffe" (BGR mean subtraction), "builtin" (the backbone rescales itself)
    or "unit" ([0, 1], for the from-scratch CNNs).
    """

    application: Callable[..., keras.Model] | None
    preprocessing: str
    min_size: int = 32


ARCHITECTURES: dict[str, Architecture] = {
    "resnet50": Architecture(keras.applications.ResNet50, "caffe"),
    "efficientnetb0": Architecture(keras.applications.EfficientNetB0, "builtin"),
    "mobilenetv2": Architecture(keras.applications.MobileNetV2, "tf"),
    "mobilenetv3small": Architecture(keras.applications.MobileNetV3Small, "builtin"),
    "densenet121": Architecture(keras.applications.DenseNet121, "torch"),
    "vgg16": Architecture(keras.applications.VGG16, "caffe"),
    "inceptionv3": Architecture(keras.applications.InceptionV3, "tf", min_size=75),
    "simple_cnn": Architecture(None, "unit"),
    "light_cnn": Architecture(None, "unit"),
}
"""Every architecture :func:`build_model` accepts, by name."""

_DEFAULT_DENSE_UNITS = {"light_cnn": 256}
_SCRATCH_BN_MOMENTUM = 0.9
"""BatchNorm momentum of the from-scratch CNNs. Keras's 0.99 keeps the moving statistics near their initial
values for the first ~1000 steps, so a short run predicts a single class in inference mode."""


def build_model(
    arch: str,
    *,
    task: str = "multiclass",
    num_classes: int = len(CLASS_NAMES),
    input_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    weights: str | Path | None = "imagenet",
    dropout: float = 0.3,
    dense_units: int | None = None,
    batch_norm: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Build a flat classifier for raw 0..255 RGB images of ``input_size`` (height, width).

    ``weights``: "imagenet", None (random init) or a path to a backbone weights file; the from-scratch CNNs
    accept None only. A pretrained backbone starts frozen (train the head, then
    :func:`set_backbone_trainable`). ``dense_units`` None means the architecture's default (256 for
    light_cnn, else no hidden dense layer).
    """
    spec = _architecture(arch)
    _check_head_args(task, num_classes, dropout)
    _check_input_size(arch, input_size, spec.min_size)
    inputs = keras.Input(shape=(*input_size, 3), name="image")
    x = preprocessing_layer(spec.preprocessing)(inputs) if spec.preprocessing != "builtin" else inputs
    if spec.application is None:
        _check_scratch_weights(arch, weights)
        x = _SCRATCH_BUILDERS[arch](x)
    else:
        x = _application_output(arch, spec, x, input_size, weights)
    features = layers.GlobalAveragePooling2D(name="features")(x)
    units = _DEFAULT_DENSE_UNITS.get(arch, 0) if dense_units is None else dense_units
    outputs = _head(features, task, num_classes, dropout, units, batch_norm)
    model = keras.Model(inputs, outputs, name=name or f"{arch}_{task}")
    _check_serialisable(model)
    if spec.application is not None and weights is not None:
        set_backbone_trainable(model, False)
    return model


def _architecture(arch: str) -> Architecture:
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def _check_head_args(task: str, num_classes: int, dropout: float) -> None:
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if task == "multiclass" and num_classes < 2:
        raise ValueError(f"A multiclass model needs num_classes >= 2, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _check_input_size(arch: str, input_size: tuple[int, int], min_size: int) -> None:
    if len(input_size) != 2 or min(input_size) < min_size:
        raise ValueError(
            f"{arch} needs input_size=(height, width) with both sides >= {min_size}, got {input_size}"
        )


def _check_scratch_weights(arch: str, weights: str | Path | None) -> None:
    if weights is not None:
        raise ValueError(
            f"{arch} is trained from scratch and has no pretrained weights; pass weights=None "
            f"(got weights={weights!r})"
        )


def preprocessing_layer(mode: str) -> layers.Layer:
    """A ``preprocess_input`` of keras.applications as one serialisable built-in layer named ``preprocess``.

    "tf" maps 0..255 to [-1, 1]; "torch" to ImageNet mean/std units; "unit" to [0, 1]; "caffe" subtracts the
    ImageNet mean in RGB order (:func:`_application_output` then flips the first convolution's input channels
    instead of flipping the image to BGR); "caffe_bgr" does what Keras's own caffe ``preprocess_input`` does,
    RGB to BGR and the BGR mean subtracted, as a fixed 1x1 convolution (exact: weights 0 and 1), for models
    trained with it outside.
    """
    if mode == "caffe_bgr":
        return _bgr_mean_subtraction()
    if mode == "tf":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    if mode == "torch":
        scale = [1.0 / (255.0 * std) for std in _IMAGENET_STD_RGB]
        offset = [-mean / std for mean, std in zip(_IMAGENET_MEAN_RGB, _IMAGENET_STD_RGB, strict=True)]
        return layers.Rescaling(scale, offset=offset, name="preprocess")
    if mode == "caffe":
        return layers.Rescaling(1.0, offset=[-mean for mean in _CAFFE_MEAN_RGB], name="preprocess")
    if mode == "unit":
        return layers.Rescaling(1.0 / 255.0, name="preprocess")
    raise ValueError(f"Unknown preprocessing mode {mode!r}")


def _bgr_mean_subtraction() -> layers.Layer:
    """A frozen 1x1 convolution computing BGR - mean(BGR) from RGB input (built, weights set)."""
    layer = layers.Conv2D(3, 1, name="preprocess", trainable=False)
    layer.build((None, None, None, 3))
    permutation = np.eye(3, dtype=np.float32)[::-1].reshape(1, 1, 3, 3)
    layer.set_weights([permutation, -np.array(_CAFFE_MEAN_RGB[::-1], dtype=np.float32)])
    return layer


def _application_output(
    arch: str,
    spec: Architecture,
    x: keras.KerasTensor,
    input_size: tuple[int, int],
    weights: str | Path | None,
) -> keras.KerasTensor:
    """Build the keras.applications backbone directly on ``x`` (no nested model) and return its output."""
    weights_arg = _weights_argument(weights)
    with _layer_only_hard_sigmoid():
        try:
            backbone = spec.application(
                include_top=False, weights=weights_arg, input_tensor=x, input_shape=(*input_size, 3)
            )
        except Exception as error:
            _raise_weights_error(arch, weights_arg, error)
            raise
    if spec.preprocessing == "caffe" and weights is not None:
        _flip_first_conv_input_channels(backbone)
    return backbone.output


def _raise_weights_error(arch: str, weights: str | None, error: Exception) -> None:
    """Re-raise a failed weights download or weights-file load as a clear project error."""
    if weights == "imagenet" and "URL fetch failure" in str(error):
        raise DownloadError(
            f"Could not download the ImageNet weights for {arch}: {error}\n"
            "Fix: go online once, or set KERAS_HOME to a folder whose models/ holds the official Keras "
            "weight files, or pass weights=None."
        ) from error
    if weights not in ("imagenet", None):
        raise CheckpointError(
            f"Could not load backbone weights for {arch} from {weights}: {error}\n"
            f"Fix: pass a weights file of keras.applications' {arch} saved with include_top=False."
        ) from error


def _weights_argument(weights: str | Path | None) -> str | None:
    if weights is None or weights == "imagenet":
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"Backbone weights file not found: {path}\n"
            'Fix: check the path, or use weights="imagenet" (downloads once) or weights=None.'
        )
    return str(path)


@contextlib.contextmanager
def _layer_only_hard_sigmoid() -> Iterator[None]:
    """Make MobileNetV3 build its hard-sigmoid from layers; its ``x + 3.0`` ops do not reload from .h5.

    The replacement computes exactly ``relu6(x * 1 + 3) * (1 / 6)``, the same arithmetic as Keras's own.
    """

    def hard_sigmoid(x):
        x = layers.Rescaling(1.0, offset=3.0)(x)
        x = layers.ReLU(6.0)(x)
        return layers.Rescaling(1.0 / 6.0)(x)

    with mock.patch("keras.src.applications.mobilenet_v3.hard_sigmoid", hard_sigmoid):
        yield


def _flip_first_conv_input_channels(backbone: keras.Model) -> None:
    """Reverse the first convolution's input channels so BGR-trained weights read RGB images unchanged."""
    conv = next(layer for layer in backbone.layers if isinstance(layer, layers.Conv2D))
    conv.kernel.assign(keras.ops.flip(conv.kernel, axis=2))


def _simple_cnn(x: keras.KerasTensor) -> keras.KerasTensor:
    """Four Conv-BN-ReLU-MaxPool blocks with 32-64-128-256 filters."""
    for block, filters in enumerate((32, 64, 128, 256), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.BatchNormalization(momentum=_SCRATCH_BN_MOMENTUM, name=f"block{block}_bn")(x)
        x = layers.ReLU(name=f"block{block}_relu")(x)
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return x


def _light_cnn(x: keras.KerasTensor) -> keras.KerasTensor:
    """Four depthwise-separable blocks (32-64-128-256 filters); dropout 0.25/0.35/0.45 after blocks 2-4."""
    for block, (filters, rate) in enumerate(zip((32, 64, 128, 256), (0.0, 0.25, 0.35, 0.45), strict=True), 1):
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_sepconv")(
            x
        )
        x = layers.BatchNormalization(momentum=_SCRATCH_BN_MOMENTUM, name=f"block{block}_bn")(x)
        x = layers.ReLU(name=f"block{block}_relu")(x)
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
        if rate:
            x = layers.Dropout(rate, name=f"block{block}_dropout")(x)
    return x


_SCRATCH_BUILDERS: dict[str, Callable[[keras.KerasTensor], keras.KerasTensor]] = {
    "simple_cnn": _simple_cnn,
    "light_cnn": _light_cnn,
}


def _head(
    features: keras.KerasTensor,
    task: str,
    num_classes: int,
    dropout: float,
    dense_units: int,
    batch_norm: bool,
) -> keras.KerasTensor:
    """Classifier head: [BN] -> [Dense relu] -> [Dropout] -> ``logits`` -> ``probabilities``."""
    x = features
    if batch_norm:
        x = layers.BatchNormalization(name="head_batch_norm")(x)
    if dense_units:
        x = layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    units, activation = (num_classes, "softmax") if task == "multiclass" else (1, "sigmoid")
    logits = layers.Dense(units, name="logits")(x)
    return layers.Activation(activation, name="probabilities")(logits)


def _check_serialisable(model: keras.Model) -> None:
    """Fail early if the graph holds bare ops (not layers): those do not reload from an .h5 file."""
    bare_ops = [op.name for op in model.operations if not isinstance(op, layers.Layer)]
    if bare_ops:
        raise RuntimeError(f"Model {model.name} holds ops that will not reload from .h5: {bare_ops[:5]}")


def _feature_index(model: keras.Model) -> int:
    for index, layer in enumerate(model.layers):
        if layer.name == "features":
            return index
    raise ValueError(f"Model {model.name} has no 'features' layer; build it with helpers.models.build_model")


def backbone_layers(model: keras.Model) -> list[layers.Layer]:
    """The layers from the input up to and including the pooled ``features`` layer."""
    return model.layers[: _feature_index(model) + 1]


def head_layers(model: keras.Model) -> list[layers.Layer]:
    """The classifier-head layers after ``features``, in call order (they form a simple chain)."""
    return model.layers[_feature_index(model) + 1 :]


def feature_extractor(model: keras.Model) -> keras.Model:
    """A model from the image input to the pooled ``features`` (shares the original's layers)."""
    return keras.Model(model.input, model.get_layer("features").output, name=f"{model.name}_features")


def head_model(model: keras.Model) -> keras.Model:
    """A model from a feature vector to ``probabilities`` using the SAME head layers, so training it trains
    the full model's head (the fast path that trains on cached features)."""
    feature_dim = model.get_layer("features").output.shape[-1]
    x = inputs = keras.Input(shape=(feature_dim,), name="features_input")
    for layer in head_layers(model):
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_head")


def set_backbone_trainable(model: keras.Model, trainable: bool, top_n: int | None = None) -> None:
    """Freeze or unfreeze the backbone (only its top ``top_n`` layers when given); BatchNormalization layers
    always stay frozen so they run in inference mode. Recompile the model afterwards."""
    backbone = backbone_layers(model)
    first_unfrozen = 0 if top_n is None else max(len(backbone) - top_n, 0)
    for index, layer in enumerate(backbone):
        is_batch_norm = isinstance(layer, layers.BatchNormalization)
        layer.trainable = trainable and index >= first_unfrozen and not is_batch_norm
