"""Checkpoints: versioned ``.h5`` Keras models with a JSON sidecar recording how they were made.

Files are named ``{arch}_v{version}_{epoch:02d}_{val_metric:.3f}.h5``, written atomically and never
overwritten; loading turns every kind of broken file into a :class:`CheckpointError` that says what to do.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from helpers.core import config
from helpers.core.atomic import atomic_path, atomic_write_text
from helpers.core.errors import CheckpointError
from helpers.core.provenance import git_commit, package_version
from helpers.models.legacy import is_keras2_file, keras_version, load_keras2_model

CHECKPOINT_SUFFIX = ".h5"
_SIDECAR_FIX = "restore the .json from a copy, or adopt the original model file again (skinlesion adopt)."


class ForeignCheckpointError(CheckpointError):
    """A model file from elsewhere, without the sidecar that says its classes, input and preprocessing."""


def checkpoint_name(arch: str, version: int, epoch: int, val_metric: float) -> str:
    """File name of a checkpoint, e.g. ``mobilenetv2_v1_12_0.781.h5``."""
    if not arch or "/" in arch or "\\" in arch:
        raise ValueError(f"arch must be a plain name, got {arch!r}")
    if version < 1 or epoch < 0:
        raise ValueError(f"version must be >= 1 and epoch >= 0, got version={version}, epoch={epoch}")
    return f"{arch}_v{version}_{epoch:02d}_{val_metric:.3f}{CHECKPOINT_SUFFIX}"


def next_version(arch: str, models_dir: str | Path) -> int:
    """The version number for a new run of ``arch``: one more than the highest saved in ``models_dir``."""
    pattern = re.compile(rf"^{re.escape(arch)}_v(\d+)_\d+_.*{re.escape(CHECKPOINT_SUFFIX)}$")
    versions = [int(match[1]) for path in _model_files(models_dir) if (match := pattern.match(path.name))]
    return max(versions, default=0) + 1


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar that sits beside a checkpoint (same stem, ``.json``)."""
    return Path(path).with_suffix(".json")


def infer_metadata(model: keras.Model) -> dict[str, Any]:
    """Best-guess metadata for a model without a sidecar: task and classes from its output width."""
    units = model.output_shape[-1]
    if units == 1:
        task, class_names = "binary", list(config.BINARY_CLASS_NAMES)
    elif units == len(config.CLASS_NAMES):
        task, class_names = "multiclass", list(config.CLASS_NAMES)
    else:
        task, class_names = "multiclass", [f"class_{index}" for index in range(units)]
    return {
        "task": task,
        "class_names": class_names,
        "input_size": list(model.input_shape[1:3]),
        "arch": model.name,
        "split_file": None,
        "params": {},
        "history": {},
    }


def save_checkpoint(
    model: keras.Model, path: str | Path, metadata: dict[str, Any], *, half_precision: bool = False
) -> Path:
    """Save ``model`` to a new ``.h5`` file plus its JSON sidecar, both atomically; never overwrites.

    ``metadata`` should hold task, class_names, input_size, arch, split_file, params, history and, for
    :func:`best_checkpoint`, ``monitor`` and ``val_metric``; missing basics are inferred from the model.
    The git commit, creation time and Keras/TensorFlow versions are added here. ``half_precision`` stores
    the weights as float16, half the file (e.g. an ensemble that must fit a size limit); any Keras loads
    them back into its float32 model, the probabilities moving by about 1e-3 on average and about 0.01 at
    most (the sidecar records ``weights_dtype``).
    """
    path = check_new_checkpoint_path(path)
    record = {**infer_metadata(model), **metadata, **_provenance()}
    record["weights_dtype"] = "float16" if half_precision else "float32"
    _check_matches_model(record, model, path)
    atomic_write_text(sidecar_path(path), json.dumps(record, indent=2, default=_json_default))
    try:
        with atomic_path(path) as tmp, _quiet_legacy_format_warning():
            if half_precision:
                with tempfile.TemporaryDirectory() as folder:
                    full = Path(folder) / path.name
                    model.save(full, include_optimizer=False)
                    _copy_with_half_precision_weights(full, tmp)
            else:
                model.save(tmp, include_optimizer=False)  # for inference; resume uses its own snapshots
    except BaseException:
        sidecar_path(path).unlink(missing_ok=True)
        raise
    return path


def _copy_with_half_precision_weights(source: Path, target: Path) -> None:
    """Copy the Keras ``.h5`` file ``source`` to ``target`` with its float32 weights stored as float16 (a
    weight array with a value outside float16's range stays float32); every group, attribute and other
    dataset's values as they were (HDF5 storage options such as chunking are not carried over)."""
    half_max = float(np.finfo(np.float16).max)

    def copy(name: str, item: h5py.Group | h5py.Dataset) -> None:
        if isinstance(item, h5py.Group):
            copied = written.require_group(name)
        else:
            data = item[()]
            weights = name.startswith("model_weights/") and isinstance(data, np.ndarray) and data.size > 0
            weights = weights and data.dtype == np.float32
            if weights and np.abs(data).max() < half_max:
                data = data.astype(np.float16)
            copied = written.create_dataset(name, data=data)
        copied.attrs.update(item.attrs)

    with h5py.File(source, "r") as read, h5py.File(target, "w") as written:
        written.attrs.update(read.attrs)
        read.visititems(copy)


def check_new_checkpoint_path(path: str | Path) -> Path:
    """``path`` if a new checkpoint may be saved there (an ``.h5`` name, no file yet), else CheckpointError:
    callers check it before long work, so that a bad name fails at once, not after it."""
    path = Path(path)
    if path.suffix != CHECKPOINT_SUFFIX:
        raise CheckpointError(f"Checkpoint path must end in {CHECKPOINT_SUFFIX}: {path}")
    if path.exists():
        raise CheckpointError(
            f"Refusing to overwrite the existing checkpoint {path}\n"
            "Fix: save under a new name (see checkpoint_name and next_version) or delete the old file first."
        )
    return path


def _provenance() -> dict[str, Any]:
    return {
        "git_commit": git_commit(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "keras_version": keras.__version__,
        "tensorflow_version": package_version("tensorflow"),
    }


def _check_matches_model(record: dict[str, Any], model: keras.Model, path: Path) -> None:
    """Raise a CheckpointError unless ``record`` describes ``model``: its output width and input size."""
    _check_output_width(record, model, path)
    _check_input_size(record, model, path)


def _check_output_width(record: dict[str, Any], model: keras.Model, path: Path) -> None:
    """A binary model outputs P(malignant) (one sigmoid) or [P(benign), P(malignant)]; a multiclass model
    one value per class."""
    expected_units = {1, 2} if record["task"] == "binary" else {len(record["class_names"])}
    if model.output_shape[-1] not in expected_units:
        raise CheckpointError(
            f"Metadata for {path} says task={record['task']!r} with {len(record['class_names'])} classes, "
            f"but the model outputs {model.output_shape[-1]} values.\n"
            "Fix: pass the task and class_names the model was built for."
        )


def _check_input_size(record: dict[str, Any], model: keras.Model, path: Path) -> None:
    """The recorded input_size must be the (height, width) the model fixes (a None side takes any size), or
    images would be resized for another model."""
    fixed = model.inputs[0].shape[1:3]
    pairs = zip(fixed, record["input_size"], strict=True)
    if any(side is not None and side != recorded for side, recorded in pairs):
        raise CheckpointError(
            f"Metadata for {path} says input_size {list(record['input_size'])}, but the model takes "
            f"{fixed[0] or 'any'}x{fixed[1] or 'any'} images.\nFix: pass the input size the model was built "
            f"for; for a saved checkpoint its sidecar {sidecar_path(path).name} is another model's: "
            f"{_SIDECAR_FIX}"
        )


def _json_default(value: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(
        f"Checkpoint metadata value {value!r} of type {type(value).__name__} is not JSON-serialisable"
    )


@contextlib.contextmanager
def _quiet_legacy_format_warning() -> Iterator[None]:
    """Silence Keras's "HDF5 is legacy" log line: ``.h5`` is this project's chosen checkpoint format."""
    logger = logging.getLogger("absl")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def load_checkpoint(path: str | Path) -> tuple[keras.Model, dict[str, Any]]:
    """Load a project checkpoint, ``.h5`` or ``.keras`` (uncompiled, safe mode), and its sidecar metadata.

    A model file without a sidecar (from elsewhere) is refused with a :class:`ForeignCheckpointError` saying
    what ``skinlesion adopt`` needs to make it a checkpoint: its class order and preprocessing are unknown,
    and a guess would give confident wrong answers.
    """
    path = Path(path)
    check_model_file(path)
    metadata = read_metadata(path)
    if metadata is None:
        raise ForeignCheckpointError(foreign_checkpoint_message(path))
    _check_record(metadata, path)
    model = load_model_file(path)
    _check_matches_model(metadata, model, path)
    metadata["checkpoint"] = str(path)
    return model, metadata


def load_model_file(path: str | Path) -> keras.Model:
    """The Keras model stored in an ``.h5`` or ``.keras`` file, whichever Keras saved it (Keras 2 files are
    converted, see :mod:`helpers.models.legacy`); CheckpointError naming the problem and the fix."""
    path = Path(path)
    check_model_file(path)
    if path.suffix == ".h5" and is_keras2_file(path):
        return load_keras2_model(path)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        raise CheckpointError(
            f"Could not rebuild the Keras model stored in {path}: {error}\n"
            "Fix: the file may use custom layers or Python code (Lambda layers are refused in safe mode); "
            "rebuild it from built-in layers, or re-save it with helpers.models.save_checkpoint."
        ) from error


def foreign_checkpoint_message(path: Path) -> str:
    """Why a model file without a sidecar is not used as it is, what it reveals, and the adopt command."""
    facts, example = _model_facts(path)
    return (
        f"{path} is not a checkpoint of this project (no sidecar {sidecar_path(path).name} beside it). "
        f"{facts} The order of its classes and the preprocessing it expects (x / 255, "
        "preprocess_input, ...) are not recorded, so its predictions would be a guess.\n"
        "Fix: adopt it once; that checks the model, moves the preprocessing inside it and records where it "
        f"came from:\n  skinlesion adopt {path} {example}"
    )


def _model_facts(path: Path) -> tuple[str, str]:
    """What a foreign model file tells about itself, and the adopt options it suggests."""
    options = "--preprocessing rescale|mobilenet_v2|resnet50|densenet|efficientnet|inception|vgg|none"
    try:
        model = load_model_file(path)
    except CheckpointError as error:
        first_line = str(error).splitlines()[0]
        return f"It could not be opened either: {first_line}", f"--task multiclass|binary {options}"
    width = model.outputs[0].shape[-1]
    height, side = model.inputs[0].shape[1:3]
    size = f"{height} {side}" if height and side else "H W"
    saved_by = f"Saved by Keras {keras_version(path)}, it" if path.suffix == ".h5" else "It"
    facts = (
        f"{saved_by} outputs {width} value(s) per image and takes {height or 'any'}x{side or 'any'} images."
    )
    if width == 1:
        task = "--task binary"
    else:
        kind = "binary" if width == 2 else "multiclass"
        task = f"--task {kind} --classes NAME ... (its {width} outputs in order)"
    return facts, f"{task} {options} --input-size {size}"


def check_model_file(path: Path) -> None:
    """Raise a CheckpointError naming the problem and the fix unless ``path`` is a readable Keras model file
    (``.h5``: HDF5 with a model; ``.keras``: Keras 3's zip archive)."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file.\nFix: {_name_one_inside(path)}")
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint not found: {path}\n"
            "Fix: check the path; helpers.models.list_checkpoints(models_dir) lists the saved ones."
        )
    if path.suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path} is not a Keras 3 .keras archive (not a zip file: truncated, or renamed?)"
                "\nFix: copy the file again, or export it again with `skinlesion export --format keras`."
            )
        return
    _check_keras_h5(path)


def _name_one_inside(folder: Path) -> str:
    """The fix for a folder given as a checkpoint: the model files it holds, or that it holds none."""
    found = [path.name for path in _model_files(folder, (CHECKPOINT_SUFFIX, ".keras"))]
    if not found:
        return "it holds no .h5 or .keras file; point to the checkpoint file itself."
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    return f"name one of the model files in it: {shown}."


def _check_keras_h5(path: Path) -> None:
    """Raise a CheckpointError naming the problem and the fix unless the existing file ``path`` holds a Keras
    model in HDF5."""
    if not h5py.is_hdf5(path) and zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is a Keras 3 .keras archive (a zip file), not HDF5: renamed from .keras?\n"
            f"Fix: rename it to {path.with_suffix('.keras').name} (its sidecar .json name stays the same)."
        )
    if not h5py.is_hdf5(path):
        raise CheckpointError(
            f"{path} is not an HDF5 file, so not a Keras .h5 model (an image or other file renamed?)\n"
            "Fix: point to a .h5 or .keras file written by save_checkpoint or keras model.save(...)."
        )
    try:
        with h5py.File(path, "r") as file:
            has_model = "model_config" in file.attrs
    except OSError as error:
        raise CheckpointError(
            f"{path} is truncated or corrupt and cannot be opened: {error}\n"
            "Fix: the copy or download was probably interrupted; copy the file again or retrain the model."
        ) from error
    if not has_model:
        raise CheckpointError(
            f"{path} is an HDF5 file but holds no Keras model (perhaps weights only or other data).\n"
            "Fix: build the architecture with helpers.models.build_model and call model.load_weights on "
            "weights-only files; load_checkpoint needs a whole model saved with model.save('x.h5')."
        )


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The sidecar metadata of a checkpoint, or None when it has no sidecar."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"Checkpoint sidecar {sidecar} is unreadable: {error}\nFix: {_SIDECAR_FIX}"
        ) from error
    if not isinstance(record, dict):
        raise CheckpointError(
            f"Checkpoint sidecar {sidecar} holds a JSON {type(record).__name__}, not a checkpoint record "
            f"(an object).\nFix: {_SIDECAR_FIX}"
        )
    return record


def _is_record(record: dict[str, Any]) -> bool:
    """Whether ``record`` holds what loading reads: a task, a list of class names and an input_size of two
    positive whole numbers."""
    size = record.get("input_size")
    return (
        isinstance(record.get("task"), str)
        and isinstance(record.get("class_names"), list)
        and isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size)
    )


def _check_record(record: dict[str, Any], path: Path) -> None:
    """Raise a CheckpointError unless the sidecar read for ``path`` is a checkpoint record."""
    if not _is_record(record):
        raise CheckpointError(
            f"The metadata of {path} (its sidecar {sidecar_path(path).name}) is not a checkpoint record: it "
            f"needs task, class_names (a list) and input_size ([height, width]).\nFix: {_SIDECAR_FIX}"
        )


def is_project_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` has a readable checkpoint record beside it (a damaged or foreign .json does not
    count): what adopt must not be given."""
    try:
        record = read_metadata(path)
    except CheckpointError:
        return False
    return record is not None and _is_record(record)


def list_checkpoints(models_dir: str | Path, task: str | None = None) -> list[Path]:
    """The ``.h5`` checkpoints in ``models_dir`` sorted by name, only those made for ``task`` when given."""
    paths = _model_files(models_dir)
    if task is None:
        return paths
    return [path for path in paths if (read_metadata(path) or {}).get("task") == task]


def _model_files(models_dir: str | Path, suffixes: Sequence[str] = (CHECKPOINT_SUFFIX,)) -> list[Path]:
    """Model files (``suffixes``) in a folder, leaving out the hidden temporaries of writes in progress;
    none when the folder is missing or cannot be listed."""
    folder = Path(models_dir)
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.glob("*")  # glob, unlike iterdir, yields nothing from a folder it cannot list
        if path.suffix in suffixes and not path.name.startswith(".") and path.is_file()
    )


def trained_partitions(metadata: dict[str, Any]) -> list[str]:
    """The partitions of its split a checkpoint was trained on (``train`` unless its sidecar says more)."""
    return list(metadata.get("trained_on") or ["train"])


def best_checkpoint(models_dir: str | Path, task: str | None = None) -> Path:
    """The checkpoint whose sidecar records the highest ``val_metric`` (for ``task`` when given); checkpoints
    trained on their validation images have no held-out score and are never chosen."""
    scored = []
    for path in list_checkpoints(models_dir, task):
        metadata = read_metadata(path) or {}
        held_out = "val" not in trained_partitions(metadata)
        if metadata.get("val_metric") is not None and held_out:
            scored.append((float(metadata["val_metric"]), path))
    if not scored:
        for_task = f" for task {task!r}" if task else ""
        raise CheckpointError(
            f"No checkpoint{for_task} with a recorded val_metric in {models_dir}\n"
            "Fix: train a model first (checkpoints are saved with their validation metric in the sidecar)."
        )
    return max(scored)[1]


def resolve_checkpoint(
    path: str | Path = "", task: str | None = None, models_dir: str | Path | None = None
) -> Path:
    """The checkpoint at ``path`` (a relative path from the project root), or the best checkpoint (for
    ``task`` when given) in ``path`` if it is a folder. Empty: the best one trained here (in ``models_dir``,
    default models/), else the released checkpoint of models/release/, so a fresh clone works untrained."""
    if str(path):
        path = config.project_path(path)
        return best_checkpoint(path, task) if path.is_dir() else path
    try:
        return best_checkpoint(config.MODELS_DIR if models_dir is None else models_dir, task)
    except CheckpointError:
        if not list_checkpoints(config.RELEASE_DIR, task):
            raise
        return list_checkpoints(config.RELEASE_DIR, task)[-1]


def checked_class_names(metadata: dict[str, Any]) -> tuple[str, ...]:
    """The checkpoint's class names, after checking they are its task's standard class set (in order)."""
    task = metadata.get("task")
    if task not in config.TASK_CLASSES:
        raise CheckpointError(
            f"{metadata.get('checkpoint', 'checkpoint')} has unknown task {task!r}; expected one of "
            f"{list(config.TASK_CLASSES)}\nFix: use a checkpoint saved by helpers.training."
        )
    check_compatible(metadata, class_names=config.TASK_CLASSES[task])
    return config.TASK_CLASSES[task]


def _class_list(names: Sequence[str], shown: int = 7) -> str:
    """The class names as a list, or the first few, the last and the count if more (ImageNet has 1,000)."""
    names = list(names)
    if len(names) <= shown:
        return str(names)
    return f"[{', '.join(map(repr, names[: shown - 1]))}, ..., {names[-1]!r}] ({len(names)} classes)"


def check_compatible(
    metadata: dict[str, Any], *, class_names: Sequence[str], input_size: Sequence[int] | None = None
) -> None:
    """Raise a CheckpointError if a checkpoint was made for another class set/task or input size."""
    source = metadata.get("checkpoint", "this checkpoint")
    trained_for = list(metadata.get("class_names", []))
    if trained_for != list(class_names):
        raise CheckpointError(
            f"{source} was trained for task {metadata.get('task')!r} with classes "
            f"{_class_list(trained_for)}, but these data use classes {_class_list(class_names)}.\n"
            "Fix: pick a checkpoint made for this task (list_checkpoints(models_dir, task=...)) or train one."
        )
    if input_size is not None and list(metadata.get("input_size", [])) != list(input_size):
        raise CheckpointError(
            f"{source} expects images of size {metadata.get('input_size')}, not {list(input_size)}.\n"
            "Fix: resize images to the checkpoint's input_size or train a model for this size."
        )
