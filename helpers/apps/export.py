"""Export a checkpoint for deployment (TF Serving SavedModel, native .keras, ONNX, TFLite) and check that the
exported file, run by its own runtime, gives the probabilities the Keras model gives (``skinlesion export``).

Every export takes raw RGB images, float32 (batch, height, width, 3) in 0..255, named ``image``, and returns
``probabilities``; preprocessing is inside the graph. Quantized TFLite keeps float input and output. Files and
folders are written under a temporary name and renamed into place, so a failed export leaves nothing behind;
the temporaries of a killed one are deleted by the next export to the same folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from helpers.core import config
from helpers.core.atomic import atomic_path, atomic_write_bytes, remove_stale_temporaries, staging_directory
from helpers.core.errors import SkinLesionError
from helpers.core.extras import import_extra
from helpers.data.pipeline import load_image_array
from helpers.evaluation.metrics import balanced_accuracy
from helpers.evaluation.operating_point import operating_point_path
from helpers.evaluation.sets import class_labels, internal_partitions, partition
from helpers.models.adopt import parity_images
from helpers.models.checkpoints import checked_class_names, load_checkpoint, resolve_checkpoint, sidecar_path
from helpers.models.predict import class_probabilities

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("savedmodel", "keras", "onnx", "tflite")
QUANTIZATIONS: tuple[str, ...] = ("float16", "int8")
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
SIGNATURE = "serving_default"
REPRESENTATIVE_IMAGES = 150
"""Training images used to calibrate int8 activation ranges (TFLite recommends about 100-500)."""

PARITY_IMAGES = 32
EVAL_IMAGES = 300
_BATCH = 32
Predictor = Callable[[np.ndarray], np.ndarray]


class ExportError(SkinLesionError, ValueError):
    """An export request that cannot be carried out: unknown format, bad quantization, no images."""


def export_model(
    checkpoint: str | Path,
    fmt: str,
    *,
    out_dir: str | Path | None = None,
    quantize: str | None = None,
    representative_frame: pd.DataFrame | None = None,
) -> Path:
    """Export a checkpoint as ``fmt`` into ``out_dir`` (default: ``exported/`` beside it); returns the path.

    savedmodel: ``<stem>/<version>/`` (TF Serving layout, next free version); keras/onnx/tflite: one file
    ``<stem>[_<quantize>].<suffix>``. int8 TFLite calibrates on ``representative_frame`` (default: the
    training partition of the checkpoint's split, else the parity images), REPRESENTATIVE_IMAGES of them.
    """
    _check_request(fmt, quantize)
    checkpoint = Path(checkpoint)
    folder = Path(out_dir) if out_dir is not None else checkpoint.parent / "exported"
    _check_out_folder(folder)
    model, metadata = load_checkpoint(checkpoint)
    stem = checkpoint.stem
    _remove_stale_temporaries(folder, folder / stem)
    if fmt == "savedmodel":
        return _export_savedmodel(model, folder / stem)
    target = folder / f"{stem}{f'_{quantize}' if quantize else ''}.{fmt}"
    if fmt == "keras":
        with atomic_path(target) as tmp:
            model.save(tmp)
        copy_sidecars(checkpoint, target)
        return target
    if fmt == "onnx":
        return _export_onnx(model, target)
    images = None
    if quantize == "int8":
        images = _representative_images(metadata, representative_frame)
    return atomic_write_bytes(target, tflite_bytes(model, quantize, images))


def _representative_images(metadata: dict[str, Any], frame: pd.DataFrame | None) -> np.ndarray:
    """Images calibrating int8 ranges: ``frame``'s, else the checkpoint's training partition, else (a
    checkpoint without a split) the images parity is checked on."""
    if frame is None and not metadata.get("split_file"):
        return parity_images(tuple(metadata["input_size"]), REPRESENTATIVE_IMAGES)
    frame = checkpoint_partition(metadata, "train") if frame is None else frame
    return sample_images(frame, metadata["input_size"], REPRESENTATIVE_IMAGES)


def copy_sidecars(checkpoint: Path, target: Path) -> None:
    """Put the checkpoint's sidecar and operating point beside an exported ``.keras`` file (renamed to its
    stem), so the export is itself a checkpoint that predict, the demo and the notebooks accept."""
    for source, destination in (
        (sidecar_path(checkpoint), sidecar_path(target)),
        (operating_point_path(checkpoint), operating_point_path(target)),
    ):
        if source.is_file():
            atomic_write_bytes(destination, source.read_bytes())


def _check_request(fmt: str, quantize: str | None) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}.\nFix: choose one of {', '.join(FORMATS)}.")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ExportError(
            f"Unknown quantization {quantize!r}.\nFix: choose one of {', '.join(QUANTIZATIONS)}."
        )
    if quantize is not None and fmt != "tflite":
        raise ExportError(f"Quantization applies to TFLite only, not {fmt!r}.\nFix: add --format tflite.")


def _check_out_folder(folder: Path) -> None:
    """Refuse an output folder that is a file before any work (it would fail only after loading the model)."""
    if folder.exists() and not folder.is_dir():
        raise ExportError(
            f"The export folder {folder} is a file, not a folder.\n"
            "Fix: pass --out a folder (it is created when missing), e.g. the file's parent folder."
        )


def _remove_stale_temporaries(*folders: Path) -> None:
    """Delete what killed exports left in the folders (hidden temporaries), saying so."""
    for folder in folders:
        stale = remove_stale_temporaries(folder)
        if stale:
            names = ", ".join(path.name for path in stale)
            logger.warning(
                "Deleted %d temporaries of an interrupted export in %s: %s", len(stale), folder, names
            )


def _export_savedmodel(model: keras.Model, base: Path) -> Path:
    """Write the next numbered version of the SavedModel under ``base`` (TF Serving serves the highest)."""
    versions = [int(path.name) for path in base.glob("*") if path.name.isdigit()] if base.is_dir() else []
    target = base / str(max(versions, default=0) + 1)
    with staging_directory(target) as tmp:
        write_savedmodel(model, tmp)
        os.rename(tmp, target)
    return target


def _input_spec(model: keras.Model) -> tf.TensorSpec:
    return tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)


def write_savedmodel(model: keras.Model, folder: str | Path) -> None:
    """Write ``model`` as a SavedModel whose ``serving_default`` maps ``image`` to ``probabilities``."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE,
        lambda image: {OUTPUT_NAME: model(image, training=False)},
        input_signature=[_input_spec(model)],
    )
    archive.write_out(str(folder), verbose=False)


def _export_onnx(model: keras.Model, target: Path) -> Path:
    """Convert with Keras's ONNX export (tf2onnx under TensorFlow), then name the output ``probabilities``."""
    onnx = import_extra("onnx", "export")
    import_extra("tf2onnx", "export")
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)  # Keras's tf2onnx patch
        model.export(str(tmp), format="onnx", input_signature=[_input_spec(model)], verbose=False)
        graph_model = onnx.load(str(tmp))
        _rename_output(graph_model.graph, OUTPUT_NAME)
        onnx.save(graph_model, str(tmp))
    return target


def _rename_output(graph: Any, name: str) -> None:
    """Rename the graph's single output (tf2onnx calls it ``Identity:0``) and every reference to it."""
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = [name if output == old else output for output in node.output]
    graph.output[0].name = name


def tflite_bytes(model: keras.Model, quantize: str | None = None, images: np.ndarray | None = None) -> bytes:
    """A TFLite flatbuffer of ``model``: float32, float16 weights, or full-integer int8 (weights and
    activations, ranges calibrated on ``images``) with float input and output kept."""
    if quantize == "int8" and (images is None or len(images) == 0):
        raise ExportError("int8 quantization needs representative images to calibrate activation ranges.")
    with tempfile.TemporaryDirectory() as folder:
        write_savedmodel(model, folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            converter.representative_dataset = lambda: ([image[np.newaxis]] for image in images)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


# ---------------------------------------------------------------- images from the checkpoint's split


def checkpoint_partition(metadata: dict[str, Any], name: str) -> pd.DataFrame:
    """The ``name`` partition ("train"/"val"/"test") of the checkpoint's saved split on HAM10000."""
    if not metadata.get("split_file"):
        raise ExportError(
            f"{metadata.get('checkpoint')} records no split_file, so its {name} images are unknown.\n"
            "Fix: export a checkpoint trained by helpers.training.run, or pass representative_frame=..."
        )
    return partition(internal_partitions(metadata)[0], name)


def sample_frame(frame: pd.DataFrame, count: int, seed: int = 0) -> pd.DataFrame:
    """At most ``count`` rows of ``frame``, drawn at random with a fixed seed; ExportError if it is empty."""
    if frame.empty:
        raise ExportError("No images to export with: the frame is empty.")
    return frame.sample(n=min(count, len(frame)), random_state=seed).reset_index(drop=True)


def sample_images(frame: pd.DataFrame, input_size: list[int], count: int) -> np.ndarray:
    """float32 (N, H, W, 3) images in 0..255 of at most ``count`` rows, decoded and resized as in training."""
    paths = sample_frame(frame, count)["image_path"]
    return load_image_array(paths, tuple(input_size), progress=False).astype(np.float32)


# ---------------------------------------------------------------- running an export with its own runtime


def load_exported(path: str | Path, fmt: str) -> Predictor:
    """A function from float32 (N, H, W, 3) images to (N, K) outputs, run by the format's own runtime:
    tf.saved_model, Keras, ONNX Runtime or the LiteRT interpreter."""
    _check_request(fmt, None)
    path = str(path)
    if fmt == "savedmodel":
        signature = tf.saved_model.load(path).signatures[SIGNATURE]
        return lambda images: signature(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()
    if fmt == "keras":
        return keras_predictor(keras.models.load_model(path, compile=False))
    if fmt == "onnx":
        session = import_extra("onnxruntime", "export").InferenceSession(
            path, providers=["CPUExecutionProvider"]
        )
        return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    interpreter = import_extra("ai_edge_litert.interpreter", "export").Interpreter(model_path=path)
    runner = interpreter.get_signature_runner(SIGNATURE)
    return lambda images: runner(**{INPUT_NAME: images})[OUTPUT_NAME]


def keras_predictor(model: keras.Model) -> Predictor:
    """A Keras model as a :data:`Predictor` (inference mode)."""
    return lambda images: np.asarray(model(images, training=False))


def predict_in_batches(predict: Predictor, images: np.ndarray) -> np.ndarray:
    """Outputs of ``predict`` on ``images`` in batches of 32 (float32 input, as every export expects)."""
    images = np.asarray(images, dtype=np.float32)
    return np.concatenate(
        [predict(images[start : start + _BATCH]) for start in range(0, len(images), _BATCH)]
    )


def check_parity(
    original_model: keras.Model, exported_path: str | Path, fmt: str, images: np.ndarray
) -> dict[str, float]:
    """How far the export, run by its own runtime, is from the Keras model on ``images``: the max and mean
    absolute probability difference and the share of images with the same top class."""
    expected = predict_in_batches(keras_predictor(original_model), images)
    got = predict_in_batches(load_exported(exported_path, fmt), images)
    difference = np.abs(got - expected)
    return {
        "images": len(images),
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "top1_agreement": float(np.mean(_top_class(got) == _top_class(expected))),
    }


def _top_class(outputs: np.ndarray) -> np.ndarray:
    return class_probabilities(outputs).argmax(axis=1)


def balanced_accuracy_on(predict: Predictor, frame: pd.DataFrame, metadata: dict[str, Any]) -> float:
    """Balanced accuracy (mean per-class recall of the top class) of ``predict`` on the frame's images."""
    class_names = checked_class_names(metadata)
    labels = class_labels(frame, class_names)
    if labels is None:
        raise ExportError("The frame has images of unknown diagnosis; balanced accuracy needs labels.")
    images = load_image_array(frame["image_path"], tuple(metadata["input_size"]), progress=False)
    return balanced_accuracy(labels, class_probabilities(predict_in_batches(predict, images)))


def balanced_accuracy_change(
    original_model: keras.Model, exported_path: str | Path, fmt: str, frame: pd.DataFrame, metadata: dict
) -> dict[str, float]:
    """Balanced accuracy of the Keras model and of the export on the same images, and the change."""
    original = balanced_accuracy_on(keras_predictor(original_model), frame, metadata)
    exported = balanced_accuracy_on(load_exported(exported_path, fmt), frame, metadata)
    return {
        "images": len(frame),
        "balanced_accuracy_original": original,
        "balanced_accuracy_exported": exported,
        "balanced_accuracy_change": exported - original,
    }


# ---------------------------------------------------------------- command line


def size_mb(path: str | Path) -> float:
    """Size of a file, or of every file under a folder, in megabytes (10**6 bytes)."""
    path = Path(path)
    files = [path] if path.is_file() else [child for child in path.rglob("*") if child.is_file()]
    return sum(file.stat().st_size for file in files) / 1e6


def export_command(args: argparse.Namespace) -> int:
    """``skinlesion export``: export ``--model`` (default: the best checkpoint in models/), then print the
    path, its size, the parity with the Keras model on PARITY_IMAGES images (internal test images when the
    checkpoint has a split, else any images found: parity needs no labels) and, with a split, the
    balanced-accuracy change on up to EVAL_IMAGES test images (what quantization costs)."""
    checkpoint = args.model or resolve_checkpoint()
    path = export_model(checkpoint, args.format, out_dir=args.out, quantize=args.quantize)
    kind = f"{args.format} ({args.quantize})" if args.quantize else args.format
    print(f"Exported {kind} -> {path} ({size_mb(path):.2f} MB)")
    model, metadata = load_checkpoint(checkpoint)
    test = checkpoint_partition(metadata, "test") if metadata.get("split_file") else None
    images, origin = _parity_images(test, metadata["input_size"])
    parity = check_parity(model, path, args.format, images)
    print(
        f"Parity on {parity['images']} {origin}: max |dp| {parity['max_abs_diff']:.2e}, "
        f"mean |dp| {parity['mean_abs_diff']:.2e}, top-1 agreement {parity['top1_agreement']:.1%}"
    )
    if test is not None:
        change = balanced_accuracy_change(model, path, args.format, sample_frame(test, EVAL_IMAGES), metadata)
        print(
            f"Balanced accuracy on {change['images']} internal test images: Keras "
            f"{change['balanced_accuracy_original']:.4f}, export {change['balanced_accuracy_exported']:.4f} "
            f"(change {change['balanced_accuracy_change']:+.4f})"
        )
    return 0


def _parity_images(test: pd.DataFrame | None, input_size: list[int]) -> tuple[np.ndarray, str]:
    """Images to compare the export with the model on, and what they are."""
    if test is not None:
        return sample_images(test, input_size, PARITY_IMAGES), "internal test images"
    size = tuple(input_size)
    origin = "HAM10000 images" if config.ham10000_root() is not None else "random images (no data found)"
    return parity_images(size, PARITY_IMAGES), origin
