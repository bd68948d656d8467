"""Adopt a classifier saved elsewhere (``.h5`` from Keras 2 / tf.keras or Keras 3, or ``.keras``) as a project
checkpoint: preprocessing moved inside the model, outputs in the project's class order, a sidecar saying where
it came from, and a parity check against the original file run in its own runtime.

What a file cannot tell (the order of its classes, the preprocessing it was trained with) must be declared;
what it can tell (its output width, its input size) is checked against the declaration. The original file is
only read, never modified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from helpers.core import config
from helpers.core.errors import CheckpointError
from helpers.core.extras import import_extra
from helpers.data.ham10000 import load_ham10000
from helpers.data.pipeline import load_image_array
from helpers.models.build import preprocessing_layer
from helpers.models.checkpoints import (
    check_new_checkpoint_path,
    is_project_checkpoint,
    load_model_file,
    save_checkpoint,
)
from helpers.models.legacy import is_keras2_file, keras_version

PREPROCESSING: dict[str, str | None] = {
    "rescale": "unit",
    "mobilenet_v2": "tf",
    "inception": "tf",
    "resnet50": "caffe_bgr",
    "vgg": "caffe_bgr",
    "densenet": "torch",
    "efficientnet": None,
    "none": None,
}
"""What each ``--preprocessing`` choice did to raw 0-255 RGB outside the model, as the layer that now does it
inside (:func:`helpers.models.build.preprocessing_layer`; None: nothing, EfficientNet rescales itself)."""
APPLICATION_MODULES: dict[str, str] = {
    "mobilenet_v2": "mobilenet_v2",
    "inception": "inception_v3",
    "resnet50": "resnet50",
    "vgg": "vgg16",
    "densenet": "densenet",
    "efficientnet": "efficientnet",
}
"""The keras.applications module whose ``preprocess_input`` each choice names (run as the original did)."""
PARITY_IMAGES = 16
PARITY_TOLERANCE = 1e-4
"""Largest probability difference between the adopted model and the original that counts as the same."""


@dataclass(frozen=True)
class Adoption:
    """An adopted checkpoint, where it came from, and how closely it reproduces the original."""

    checkpoint: Path
    original: Path
    max_abs_diff: float
    parity_images: int
    parity_runtime: str


def adopt_checkpoint(
    original: str | Path,
    *,
    task: str,
    preprocessing: str,
    input_size: Sequence[int],
    classes: Sequence[str] | None = None,
    output: str | Path | None = None,
) -> Adoption:
    """Turn ``original`` into a project checkpoint (default ``models/<stem>_adopted.h5``) and check parity.

    ``classes`` lists the model's outputs in its own order (default: the project's order for ``task``).
    Raises CheckpointError naming the option to fix when a declaration contradicts the file or parity fails.
    """
    original = Path(original)
    _check_not_a_checkpoint(original)
    class_names = _declared_classes(task, classes)
    _check_choice(preprocessing)
    target = check_new_checkpoint_path(output or config.MODELS_DIR / f"{original.stem}_adopted.h5")
    foreign = load_model_file(original)
    size = _checked_input_size(foreign, input_size, original)
    order = _project_order(task, class_names)
    _check_output_width(foreign, task, class_names, original)
    adopted = _adopted_model(foreign, preprocessing, size, order, original)
    images = parity_images(size)
    reference, runtime = original_outputs(original, preprocessing, images)
    difference = float(np.abs(_class_columns(adopted.predict(images, verbose=0)) - reference[:, order]).max())
    if difference > PARITY_TOLERANCE:
        raise CheckpointError(
            f"The adopted model differs from {original} run by {runtime} by up to {difference:.2e} in "
            f"probability on {len(images)} images (tolerance {PARITY_TOLERANCE}); nothing was saved.\n"
            "Fix: report the model's layer types; check --input-size matches what the model was trained on."
        )
    record = _metadata(original, task, class_names, preprocessing, size)
    record["parity"] = {"images": len(images), "max_abs_diff": difference, "runtime": runtime}
    save_checkpoint(adopted, target, record)
    return Adoption(target, original, difference, len(images), runtime)


def _check_not_a_checkpoint(original: Path) -> None:
    """Refuse a file that already is a project checkpoint (its record is beside it): adopt is for others."""
    if is_project_checkpoint(original):
        raise CheckpointError(
            f"{original} is already a checkpoint of this project (its sidecar .json is beside it).\n"
            "Fix: use it as it is (predict, 04, 05, export); adopt files saved elsewhere."
        )


def _declared_classes(task: str, classes: Sequence[str] | None) -> tuple[str, ...]:
    if task not in config.TASK_CLASSES:
        raise CheckpointError(f"--task must be one of {', '.join(config.TASKS)}, not {task!r}.")
    return tuple(classes) if classes else config.TASK_CLASSES[task]


def _check_choice(preprocessing: str) -> None:
    if preprocessing not in PREPROCESSING:
        raise CheckpointError(
            f"--preprocessing must be one of {', '.join(PREPROCESSING)}, not {preprocessing!r}.\n"
            "Fix: name what the original project did to images before the model (e.g. x / 255 is "
            "'rescale', keras.applications.mobilenet_v2.preprocess_input is 'mobilenet_v2')."
        )


def _project_order(task: str, class_names: Sequence[str]) -> list[int]:
    """For each class in the project's order, its output index in the model (CheckpointError if the names
    are not a permutation of the task's classes)."""
    expected = config.TASK_CLASSES[task]
    if sorted(class_names) != sorted(expected) or len(set(class_names)) != len(class_names):
        raise CheckpointError(
            f"--classes {' '.join(class_names)} are not the {task} classes {', '.join(expected)} in some "
            "order.\nFix: list the model's outputs in its own order with these names, e.g. --classes "
            f"{' '.join(expected)}."
        )
    return [list(class_names).index(name) for name in expected]


def _checked_input_size(model: keras.Model, declared: Sequence[int], path: Path) -> tuple[int, int]:
    """``declared`` (height, width), after checking it against the size the model itself fixes, if any."""
    size = tuple(int(side) for side in declared)
    fixed = tuple(model.inputs[0].shape[1:3])
    if len(size) != 2 or min(size) < 1:
        raise CheckpointError(f"--input-size needs a height and a width, got {list(declared)}.")
    if None not in fixed and fixed != size:
        raise CheckpointError(
            f"{path} takes {fixed[0]}x{fixed[1]} images, not {size[0]}x{size[1]}.\n"
            f"Fix: pass --input-size {fixed[0]} {fixed[1]}."
        )
    if model.inputs[0].shape[-1] != 3:
        raise CheckpointError(
            f"{path} takes {model.inputs[0].shape[-1]}-channel images; only RGB is supported."
        )
    return size


def _check_output_width(model: keras.Model, task: str, class_names: Sequence[str], path: Path) -> None:
    """The model must output one value per declared class (a binary model: one sigmoid or two softmax)."""
    width = model.outputs[0].shape[-1]
    allowed = {1, 2} if task == "binary" else {len(class_names)}
    if width not in allowed:
        raise CheckpointError(
            f"{path} outputs {width} values per image, but --task {task} with classes "
            f"{', '.join(class_names)} needs {' or '.join(map(str, sorted(allowed)))}.\n"
            "Fix: check --task and --classes (a 7-class model is --task multiclass)."
        )
    expected = config.TASK_CLASSES[task]
    if width == 1 and tuple(class_names) != expected:
        raise CheckpointError(
            f"{path} outputs one sigmoid value, read as P({expected[-1]}); it cannot be reordered, so "
            f"--classes {' '.join(class_names)} does not fit it.\nFix: drop --classes (or give "
            f"{' '.join(expected)})."
        )


def _adopted_model(
    foreign: keras.Model, preprocessing: str, size: tuple[int, int], order: list[int], path: Path
) -> keras.Model:
    """Raw 0-255 RGB in, the declared preprocessing as a layer, the original network, outputs reordered."""
    if foreign.outputs[0].shape[-1] > 1:
        _reorder_outputs(foreign, order, path)
    inputs = keras.Input(shape=(*size, 3), name="image")
    mode = PREPROCESSING[preprocessing]
    x = preprocessing_layer(mode)(inputs) if mode else inputs
    return keras.Model(inputs, foreign(x), name=f"{path.stem}_adopted")


def _reorder_outputs(model: keras.Model, order: list[int], path: Path) -> None:
    """Permute the classifier layer's units so the outputs come in the project's order (exact: the same
    weights, moved)."""
    if order == list(range(len(order))):
        return
    layer = classifier_layer(model)
    if not isinstance(layer, keras.layers.Dense):
        raise CheckpointError(
            f"{path}: the layer producing the outputs is a {type(layer).__name__}, not a Dense layer, so its "
            "classes cannot be reordered.\nFix: re-save the model with a final Dense layer, or declare "
            "--classes in the project's order if it already uses it."
        )
    kernel, *bias = layer.get_weights()
    layer.set_weights([kernel[:, order], *(values[order] for values in bias)])


def classifier_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer computing a model's class scores: the output layer, looking through nested models and a
    final Activation/Softmax to the layer before it."""
    layer = model.outputs[0]._keras_history.operation
    if isinstance(layer, keras.Model):
        return classifier_layer(layer)
    if isinstance(layer, keras.layers.Activation | keras.layers.Softmax):
        return layer.input._keras_history.operation
    return layer


def parity_images(size: tuple[int, int], count: int = PARITY_IMAGES) -> np.ndarray:
    """float32 (count, H, W, 3) images in 0..255: HAM10000 images when the real data is found (realistic
    activations), else seeded uniform noise."""
    root = config.ham10000_root()
    if root is None:
        return np.random.default_rng(0).uniform(0, 255, (count, *size, 3)).astype(np.float32)
    frame = load_ham10000(root, verify_images=False).sample(n=count, random_state=0)
    return load_image_array(frame["image_path"], size, progress=False).astype(np.float32)


def original_outputs(path: Path, preprocessing: str, images: np.ndarray) -> tuple[np.ndarray, str]:
    """The original file's probabilities on raw ``images`` with the declared preprocessing applied outside
    the model, computed by the Keras that saved it (tf-keras for Keras 2 files), and that runtime's name."""
    if path.suffix == ".h5" and is_keras2_file(path):
        tf_keras = import_extra("tf_keras", "legacy")
        model, api, runtime = tf_keras.models.load_model(path, compile=False), tf_keras, "tf-keras"
        runtime = f"{runtime} {tf_keras.__version__} (saved by Keras {keras_version(path)})"
    else:
        model, api, runtime = load_model_file(path), keras, f"Keras {keras.__version__}"
    outputs = model.predict(_preprocess_outside(api, preprocessing)(images.copy()), verbose=0)
    return _class_columns(outputs), runtime


def _class_columns(outputs: np.ndarray) -> np.ndarray:
    """One probability column per class; a single sigmoid column P(malignant) becomes [1 - p, p]."""
    outputs = np.asarray(outputs, dtype=np.float64)
    return np.column_stack([1 - outputs[:, 0], outputs[:, 0]]) if outputs.shape[1] == 1 else outputs


def _preprocess_outside(api: Any, preprocessing: str) -> Callable[[np.ndarray], np.ndarray]:
    """The preprocessing function the original project applied, from the runtime's own keras.applications."""
    if preprocessing == "rescale":
        return lambda images: images / 255.0
    if preprocessing == "none":
        return lambda images: images
    module = getattr(api.applications, APPLICATION_MODULES[preprocessing])
    return module.preprocess_input


def _metadata(
    original: Path, task: str, class_names: Sequence[str], preprocessing: str, size: tuple[int, int]
) -> dict[str, Any]:
    """The sidecar of an adopted checkpoint: project metadata plus where it came from."""
    return {
        "task": task,
        "class_names": list(config.TASK_CLASSES[task]),
        "input_size": list(size),
        "arch": "adopted",
        "split_file": None,
        "params": {},
        "history": {},
        "adopted_from": {
            "file": str(original.resolve()),
            "sha256": hashlib.sha256(original.read_bytes()).hexdigest(),
            "keras_version": keras_version(original) if original.suffix == ".h5" else None,
            "declared_classes": list(class_names),
            "preprocessing": preprocessing,
        },
    }
