"""Ensembles saved as one model: the members' class probabilities averaged, so every tool (evaluation,
prediction, Grad-CAM, export, the demo) treats an ensemble like any single checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from helpers.core.errors import CheckpointError
from helpers.data.splits import same_split_file
from helpers.models.checkpoints import (
    check_new_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    trained_partitions,
)

ENSEMBLE_ARCH = "ensemble"
"""The ``arch`` an ensemble's sidecar records (its members keep their own)."""


MAX_DOWNSCALE = 2.0
"""How many times its own size, along a side, a member may be read: beyond it the resize skips pixels."""


def ensemble_model(
    members: Sequence[keras.Model], name: str = "ensemble", input_size: Sequence[int] | None = None
) -> keras.Model:
    """One functional model returning the mean of the members' probabilities; each member is nested under
    the name ``member_<i>`` (its own layer names stay as they were). Members may differ in input size: the
    ensemble takes the largest (most pixels), or ``input_size`` (height, width) when given, and resizes the
    image (bilinear) in front of each smaller member, so no member sees less detail than it was trained on.
    One member read at a larger ``input_size`` is a test-time smoothing of that model: the down-resize softens
    the image as training's warps soften every training image (docs/results.md). A member read more
    than ``MAX_DOWNSCALE`` times its own size along a side is refused: the resize has no antialiasing and
    would skip pixels."""
    if not members:
        raise CheckpointError("An ensemble needs at least one member.")
    widths = {(model.inputs[0].shape[-1], model.outputs[0].shape[-1]) for model in members}
    if len(widths) != 1:
        raise CheckpointError(
            f"Ensemble members must share input channels and output width: {sorted(widths)}."
        )
    shape = _read_shape(members, input_size)
    if len(members) == 1 and shape == tuple(members[0].inputs[0].shape[1:]):
        raise CheckpointError(
            "An ensemble needs at least two members, or one read at a larger input size.\n"
            "Fix: give more checkpoints, or --input-size larger than the model's own to smooth it."
        )
    inputs = keras.Input(shape=shape, name="image")
    outputs = []
    for index, model in enumerate(members):
        height, width = model.inputs[0].shape[1:3]
        member_input = inputs
        if (height, width) != shape[:2]:
            member_input = layers.Resizing(height, width, name=f"resize_{index}")(inputs)
        member = keras.Model(model.inputs, model.outputs[0], name=f"member_{index}")
        outputs.append(member(member_input, training=False))  # an ensemble is only ever inferred
    if len(outputs) == 1:  # the member's own head stays the output, so Grad-CAM reads its logits
        return keras.Model(inputs, outputs[0], name=name)
    return keras.Model(inputs, layers.Average(name="probabilities")(outputs), name=name)


def _read_shape(members: Sequence[keras.Model], input_size: Sequence[int] | None) -> tuple[int, int, int]:
    """The ensemble's input shape: the largest member's, or ``input_size`` when it covers every member's;
    CheckpointError when it is more than ``MAX_DOWNSCALE`` times a member's along a side."""
    shapes = _shapes(members)
    shape = _covering_shape(shapes, input_size)
    if any(max(shape[0] / hwc[0], shape[1] / hwc[1]) > MAX_DOWNSCALE for hwc in shapes):
        raise CheckpointError(f"{_too_far_apart(shapes, shape)}\nFix: {_closer_reading(shapes)}")
    return shape


def _too_far_apart(shapes: list[tuple], shape: tuple) -> str:
    """What is wrong when ``shape`` is more than ``MAX_DOWNSCALE`` times a member's along a side."""
    height, width = min(hwc[0] for hwc in shapes), min(hwc[1] for hwc in shapes)
    return (
        f"The ensemble's input {shape[0]}x{shape[1]} is more than {MAX_DOWNSCALE:g}x the smallest member "
        f"side ({height}x{width}): the resize in front of that member (bilinear, without antialiasing) "
        "would skip pixels."
    )


def _closer_reading(shapes: list[tuple]) -> str:
    """The fix: the largest input every member allows, or closer members when no input fits them all."""
    limit = [int(min(hwc[side] for hwc in shapes) * MAX_DOWNSCALE) for side in (0, 1)]
    if any(max(hwc[side] for hwc in shapes) > limit[side] for side in (0, 1)):
        return f"the members' input sizes are more than {MAX_DOWNSCALE:g}x apart; ensemble closer sizes."
    return f"read at most {limit[0]}x{limit[1]} (--input-size)."


def _shapes(models: Sequence[keras.Model]) -> list[tuple]:
    """Each model's input shape (height, width, channels)."""
    return [tuple(model.inputs[0].shape[1:]) for model in models]


def _covering_shape(shapes: list[tuple], input_size: Sequence[int] | None) -> tuple[int, int, int]:
    """The largest member's shape, or ``input_size`` when it covers every member's."""
    if input_size is None:
        return max(shapes, key=lambda hwc: hwc[0] * hwc[1])
    height, width = (int(side) for side in input_size)
    smaller = [hwc[:2] for hwc in shapes if hwc[0] > height or hwc[1] > width]
    if smaller:
        raise CheckpointError(
            f"Input size {height}x{width} is smaller than a member's {smaller[0][0]}x{smaller[0][1]}: that "
            "member would see less detail than it was trained on.\nFix: give an input size at least as large "
            "as every member's in both sides."
        )
    return (height, width, shapes[0][2])


def save_ensemble(
    checkpoints: Sequence[str | Path],
    target: str | Path,
    *,
    half_precision: bool = False,
    input_size: Sequence[int] | None = None,
) -> Path:
    """Load checkpoints of one task and class set (input sizes may differ, see :func:`ensemble_model`, which
    also says what ``input_size`` does), and save their ensemble at ``target`` with a sidecar naming its
    members (each member's own sidecar is kept under ``members``) and the ensemble's input size;
    ``half_precision`` stores its weights as float16 (half the size, see :func:`save_checkpoint`). A saved
    ensemble among the checkpoints gives its members: all members weigh the same (1/N), and the ensemble
    reads at least the size the saved ensemble read."""
    check_new_checkpoint_path(target)
    _check_distinct(checkpoints)
    loaded = [load_checkpoint(path) for path in checkpoints]
    first = loaded[0][1]
    for _, metadata in loaded[1:]:
        _check_same_task(first, metadata)
    saved_ensembles = [model for model, metadata in loaded if metadata.get("arch") == ENSEMBLE_ARCH]
    if saved_ensembles and input_size is None:
        if len(loaded) == 1:
            raise CheckpointError(
                f"{checkpoints[0]} is already an ensemble: saving it alone would only copy it.\n"
                "Fix: add the checkpoints to ensemble it with, or give --input-size to read it larger."
            )
        input_size = _covering_shape(_shapes([model for model, _ in loaded]), None)[:2]  # as nesting them had
    for saved in saved_ensembles:
        _covering_shape(_shapes([saved]), input_size)  # never read smaller than the saved ensemble did
    sourced = [
        (path, *member)
        for path, (model, metadata) in zip(checkpoints, loaded, strict=True)
        for member in _members_of(path, model, metadata)
    ]
    _check_no_member_twice(sourced)
    members = [(model, metadata) for _, model, metadata in sourced]
    model = ensemble_model([model for model, _ in members], name=Path(target).stem, input_size=input_size)
    metadata = _ensemble_metadata([metadata for _, metadata in members], model.inputs[0].shape[1:3])
    return save_checkpoint(model, target, metadata, half_precision=half_precision)


def _check_distinct(checkpoints: Sequence[str | Path]) -> None:
    """Refuse a checkpoint given twice: its probabilities would silently count double in the mean."""
    seen: dict[Path, str | Path] = {}
    for path in checkpoints:
        resolved = Path(path).resolve()
        if resolved in seen:
            raise CheckpointError(
                f"{path} is given twice (also as {seen[resolved]}): it would count double in the ensemble.\n"
                "Fix: list each checkpoint once."
            )
        seen[resolved] = path


def _check_no_member_twice(members: Sequence[tuple[str | Path, keras.Model, dict[str, Any]]]) -> None:
    """Refuse a model that is both given and inside a saved ensemble, or inside two: one with another's save
    record (run, epoch and save time) and weights (to float16 precision, as a half-precision ensemble keeps
    them); its probabilities would count double."""
    seen: dict[tuple, tuple[str | Path, keras.Model]] = {}
    for path, model, metadata in members:
        saved = (metadata.get("run_name"), metadata.get("epoch"), metadata.get("created"))
        if saved[2] is None:
            continue  # no save time recorded (not saved by this project): nothing to compare
        if saved in seen and _same_weights(model, seen[saved][1]):
            name = Path(str(metadata.get("checkpoint", path))).name
            raise CheckpointError(
                f"The model {name} (saved {saved[2]}) is both in {seen[saved][0]} and in {path}: it would "
                "count double in the ensemble.\nFix: give it once: leave out the checkpoint a saved ensemble "
                "already holds, or give that ensemble's members instead of it."
            )
        seen.setdefault(saved, (path, model))


def _same_weights(first: keras.Model, second: keras.Model) -> bool:
    """Whether two models hold the same weights, up to float16 rounding (a half-precision copy)."""
    ours, theirs = first.get_weights(), second.get_weights()
    return len(ours) == len(theirs) and all(
        a.shape == b.shape and np.allclose(a, b, rtol=1e-2, atol=1e-3)
        for a, b in zip(ours, theirs, strict=True)
    )


def _members_of(
    path: str | Path, model: keras.Model, metadata: dict[str, Any]
) -> list[tuple[keras.Model, dict[str, Any]]]:
    """The models a checkpoint adds to an ensemble: itself, or a saved ensemble's members with their own
    sidecars (nesting ensembles would repeat the ``member_<i>`` names, which one HDF5 file cannot hold)."""
    if metadata.get("arch") != ENSEMBLE_ARCH:
        return [(model, metadata)]
    recorded = metadata.get("members", [])
    nested = [layer for layer in model.layers if layer.name.startswith("member_")]
    if not recorded or len(recorded) != len(nested):
        raise CheckpointError(
            f"{path}: its sidecar lists {len(recorded)} ensemble members, its model holds {len(nested)}.\n"
            "Fix: give the member checkpoints themselves, or restore the sidecar saved with this ensemble."
        )
    return [(model.get_layer(f"member_{index}"), member) for index, member in enumerate(recorded)]


def _check_same_task(first: dict[str, Any], other: dict[str, Any]) -> None:
    keys = ("task", "class_names")
    if any(first.get(key) != other.get(key) for key in keys):
        raise CheckpointError(
            f"Cannot ensemble {first.get('checkpoint')} and {other.get('checkpoint')}: their task or classes "
            "differ.\nFix: ensemble checkpoints trained for the same task and classes."
        )


def _ensemble_metadata(members: Sequence[dict[str, Any]], input_size: Sequence[int]) -> dict[str, Any]:
    """The ensemble's sidecar: the shared task facts, its input size, the union of the members' training
    partitions, and every member's own metadata."""
    first = members[0]
    trained_on = sorted({part for member in members for part in trained_partitions(member)})
    return {
        "task": first["task"],
        "class_names": first["class_names"],
        "input_size": [int(side) for side in input_size],
        "arch": ENSEMBLE_ARCH,
        "split_file": _shared_split([member.get("split_file") for member in members]),
        "trained_on": trained_on,
        "params": {},
        "history": {},
        "members": [{key: value for key, value in member.items() if key != "history"} for member in members],
    }


def _shared_split(split_files: Sequence[str | None]) -> str | None:
    """The members' split file when they all used the same split (the same path, or files with the same
    content, as in two clones of the repository); None when they differ, so no internal test is claimed."""
    first = split_files[0]
    return first if all(same_split_file(first, other) for other in split_files[1:]) else None
