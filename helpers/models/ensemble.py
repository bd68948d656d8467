"""Ensembles saved as one model: the members' class probabilities averaged, so every tool (evaluation,
prediction, Grad-CAM, export, the demo) treats an ensemble like any single checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
from keras import layers

from helpers.core.errors import CheckpointError
from helpers.models.checkpoints import load_checkpoint, save_checkpoint


def ensemble_model(members: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One functional model taking the members' input and returning the mean of their probabilities; each
    member is nested under the name ``member_<i>`` (its own layer names stay as they were)."""
    if len(members) < 2:
        raise CheckpointError("An ensemble needs at least two members.")
    shapes = {(tuple(model.inputs[0].shape[1:]), model.outputs[0].shape[-1]) for model in members}
    if len(shapes) != 1:
        raise CheckpointError(f"Ensemble members must share input shape and output width: {sorted(shapes)}.")
    inputs = keras.Input(shape=members[0].inputs[0].shape[1:], name="image")
    outputs = [
        keras.Model(model.inputs, model.outputs[0], name=f"member_{index}")(inputs)
        for index, model in enumerate(members)
    ]
    return keras.Model(inputs, layers.Average(name="probabilities")(outputs), name=name)


def save_ensemble(checkpoints: Sequence[str | Path], target: str | Path) -> Path:
    """Load checkpoints of one task, class set and input size, and save their ensemble at ``target`` with a
    sidecar naming its members (each member's own sidecar is kept under ``members``)."""
    loaded = [load_checkpoint(path) for path in checkpoints]
    first = loaded[0][1]
    for _, metadata in loaded[1:]:
        _check_same_task(first, metadata)
    model = ensemble_model([model for model, _ in loaded], name=Path(target).stem)
    return save_checkpoint(model, target, _ensemble_metadata([metadata for _, metadata in loaded]))


def _check_same_task(first: dict[str, Any], other: dict[str, Any]) -> None:
    keys = ("task", "class_names", "input_size")
    if any(first.get(key) != other.get(key) for key in keys):
        raise CheckpointError(
            f"Cannot ensemble {first.get('checkpoint')} and {other.get('checkpoint')}: their task, classes "
            "or input size differ.\nFix: ensemble checkpoints trained for the same task and input size."
        )


def _ensemble_metadata(members: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ensemble's sidecar: the shared task facts, the union of the members' training partitions, and
    every member's own metadata."""
    first = members[0]
    trained_on = sorted({part for member in members for part in member.get("trained_on", ["train"])})
    return {
        "task": first["task"],
        "class_names": first["class_names"],
        "input_size": first["input_size"],
        "arch": "ensemble",
        "split_file": _shared_split([member.get("split_file") for member in members]),
        "trained_on": trained_on,
        "params": {},
        "history": {},
        "members": [{key: value for key, value in member.items() if key != "history"} for member in members],
    }


def _shared_split(split_files: Sequence[str | None]) -> str | None:
    """The members' split file when they all used the same split (the same path, or files with the same
    content, as in two clones of the repository); None when they differ, so no internal test is claimed."""
    if None in split_files:
        return None
    contents = {Path(path).read_bytes() if Path(path).is_file() else path for path in split_files}
    return split_files[0] if len(contents) == 1 else None
