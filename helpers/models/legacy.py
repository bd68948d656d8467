"""Open ``.h5`` classifiers saved by Keras 2 (tf.keras, TensorFlow 2.x up to 2.15) as Keras 3 models.

Keras 3 reads the Keras 2 HDF5 layout (the weights, in the same topological order) but rejects parts of the
stored architecture: ``groups`` of depthwise/separable convolutions, one-element ``axis`` lists in nested
models, ``/`` in layer names (DenseNet). The file's architecture JSON is rewritten for Keras 3 in a private
temporary copy and loaded from there with the same weights; the original file is never modified. Layers
that run arbitrary Python (``Lambda``, ``TFOpLambda``) are refused, as in safe mode.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import keras

from helpers.core.errors import CheckpointError

LAYER_KEYWORDS = frozenset({"name", "trainable", "dtype", "autocast", "batch_input_shape", "input_shape"})
"""Settings every Keras layer accepts besides its own arguments."""
CODE_LAYERS = frozenset({"Lambda", "TFOpLambda", "SlicingOpLambda"})
"""Keras 2 layers holding Python code or raw TensorFlow ops: not loaded (safe mode), and not convertible."""


def keras_version(path: str | Path) -> str | None:
    """The Keras version that saved an HDF5 model file (``keras_version`` attribute), None if unrecorded."""
    with h5py.File(path, "r") as file:
        version = file.attrs.get("keras_version")
    return version.decode() if isinstance(version, bytes) else version


def is_keras2_file(path: str | Path) -> bool:
    """Whether ``path`` is an HDF5 model saved by Keras 2 (tf.keras)."""
    version = keras_version(path)
    return version is not None and version.startswith("2.")


def load_keras2_model(path: str | Path) -> keras.Model:
    """A Keras 2 ``.h5`` model as a Keras 3 model with the same weights (uncompiled); CheckpointError when it
    holds layers that cannot be converted."""
    path = Path(path)
    with h5py.File(path, "r") as file:
        config = json.loads(file.attrs["model_config"])
    converted = json.dumps(keras3_config(config, path))
    with tempfile.TemporaryDirectory(prefix="skinlesion-keras2-") as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(path, copy)
        with h5py.File(copy, "r+") as file:
            file.attrs["model_config"] = converted
        try:
            return keras.models.load_model(copy, compile=False, safe_mode=True)
        except Exception as error:
            raise CheckpointError(
                f"{path} was saved by Keras {keras_version(path)} and could not be converted to Keras 3: "
                f"{type(error).__name__}: {error}\n"
                "Fix: open it with tf-keras (`uv sync --extra legacy`, import tf_keras), re-save its weights "
                "into a model built with helpers.models.build_model, or report the layer type."
            ) from error


def keras3_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """The Keras 2 architecture ``config`` rewritten for Keras 3 (a new object; ``path`` names the file)."""
    config = _as_functional(json.loads(json.dumps(config)))
    renamed = {}
    for layer in _layer_configs(config):
        _refuse_code_layer(layer, path)
        settings = layer.get("config", {})
        for key in _unknown_settings(layer):
            settings.pop(key)
        if isinstance(settings.get("axis"), list) and len(settings["axis"]) == 1:
            settings["axis"] = settings["axis"][0]
        name = settings.get("name")
        if isinstance(name, str) and "/" in name:
            renamed[name] = name.replace("/", "_")
    return _replace_strings(config, renamed) if renamed else config


def _unknown_settings(layer: dict[str, Any]) -> list[str]:
    """Settings of a Keras 2 layer config that the Keras 3 layer of that class does not take (e.g. ``groups``
    of DepthwiseConv2D, the unused ``kernel_*`` of SeparableConv2D); the parity check of an adoption shows
    that dropping them changes no output."""
    cls = getattr(keras.layers, str(layer.get("class_name")), None)
    if cls is None or not isinstance(layer.get("config"), dict) or "layers" in layer["config"]:
        return []
    accepted = set(inspect.signature(cls.__init__).parameters) | LAYER_KEYWORDS
    return [key for key in layer["config"] if key not in accepted]


def _as_functional(config: dict[str, Any]) -> dict[str, Any]:
    """A Sequential model config as the equivalent Functional one (layers chained in order), at any depth.

    Keras 3 rebuilds a Keras 2 Sequential holding a nested model wrongly (keras-team/keras#20084); the same
    network as a Functional config loads correctly, with the same layer order, so the same weights."""
    for layer in config.get("config", {}).get("layers", []):
        if isinstance(layer.get("config"), dict) and "layers" in layer["config"]:
            layer.update(_as_functional(layer))
    if config.get("class_name") != "Sequential":
        return config
    settings = config["config"]
    layers = [dict(layer) for layer in settings["layers"]]
    if layers[0]["class_name"] != "InputLayer":
        shape = layers[0]["config"].get("batch_input_shape")
        if shape is None:
            raise CheckpointError("A Sequential model without an input shape cannot be converted to Keras 3.")
        layers.insert(
            0, {"class_name": "InputLayer", "config": {"batch_input_shape": shape, "name": "input"}}
        )
    previous = None
    for layer in layers:
        layer["name"] = layer["config"]["name"]
        layer["inbound_nodes"] = [] if previous is None else [[[previous, 0, 0, {}]]]
        previous = layer["name"]
    functional = {"name": settings["name"], "layers": layers}
    functional["input_layers"] = [[layers[0]["name"], 0, 0]]
    functional["output_layers"] = [[previous, 0, 0]]
    return {**config, "class_name": "Functional", "config": functional}


def _layer_configs(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every layer config of a model config, nested models' layers included (depth first)."""
    for layer in config.get("config", {}).get("layers", []):
        yield layer
        if isinstance(layer.get("config"), dict) and "layers" in layer["config"]:
            yield from _layer_configs(layer)


def _refuse_code_layer(layer: dict[str, Any], path: Path) -> None:
    if layer.get("class_name") in CODE_LAYERS:
        name = layer.get("config", {}).get("name", "?")
        raise CheckpointError(
            f"{path} holds a {layer['class_name']} layer ({name!r}): it runs stored Python code or raw "
            "TensorFlow ops, which are not loaded (safe mode) and cannot be converted to Keras 3.\n"
            "Fix: rebuild the model without it (e.g. a Rescaling layer instead of a Lambda for x / 255) in "
            "tf-keras, save it again, and adopt that file."
        )


def _replace_strings(value: Any, replacements: dict[str, str]) -> Any:
    """``value`` with every string that is a key of ``replacements`` replaced, at any depth."""
    if isinstance(value, str):
        return replacements.get(value, value)
    if isinstance(value, list):
        return [_replace_strings(item, replacements) for item in value]
    if isinstance(value, dict):
        return {key: _replace_strings(item, replacements) for key, item in value.items()}
    return value
