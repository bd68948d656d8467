"""Evaluation sets: which images a checkpoint is tested on, and which validation images tune its operating
point.

``internal``: the test partition of the checkpoint's own lesion-level split of HAM10000; ``isic2018``: the
ISIC 2018 Task 3 test layout (other clinics: the honest external estimate); ``folder``: a benign/malignant
folder set, minus images of lesions the model trained or was validated on. The validation partition of the
checkpoint's split tunes the operating point in every case, never the test images.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.core import config
from helpers.core.errors import CheckpointError, DataError
from helpers.data.folders import drop_ham10000_overlap, load_folder_dataset, load_image_folder
from helpers.data.ham10000 import load_ham10000
from helpers.data.isic2018 import load_isic2018_test
from helpers.data.pipeline import LABEL_COLUMNS
from helpers.data.source import resolve_data_root
from helpers.data.splits import apply_split, load_split
from helpers.evaluation.metrics import malignant_probability
from helpers.models.checkpoints import checked_class_names, trained_partitions

EVAL_SETS: tuple[str, ...] = ("internal", "isic2018", "folder", "images")
"""Labelled sets first; ``images`` (a plain folder of images, no labels) can be explained, not scored."""


@dataclass(frozen=True)
class EvaluationSet:
    """A test frame, the internal validation frame used to tune threshold and temperature (None if the
    checkpoint has no split or trained on its validation images), a description, and whether any of it is
    synthetic demo data."""

    test: pd.DataFrame
    val: pd.DataFrame | None
    description: str
    synthetic: bool


def evaluation_set(
    kind: str = "internal",
    *,
    metadata: dict[str, Any],
    data_root: str | Path = "auto",
    path: str | Path | None = None,
) -> EvaluationSet:
    """The test set ``kind`` for a checkpoint, with its internal validation partition for tuning.

    "internal": the test partition of the checkpoint's split on HAM10000 (``data_root``, see
    :func:`helpers.data.source.resolve_data_root`); "isic2018": the ISIC 2018 Task 3 test folder ``path``;
    "folder": a benign/malignant folder set at ``path``, minus images of lesions the model trained or was
    validated on (when its ``ham10000_crossref.csv`` allows checking); "images": every image under ``path``,
    unlabelled. A relative ``path`` is taken from the project root. Images are resized to each checkpoint's
    own input size when predicted; a checkpoint with another class set raises CheckpointError. A checkpoint
    trained on its validation (or test) images has no validation (or internal test) partition here; such a
    (released) checkpoint scores isic2018 and image sets without HAM10000 or its split file.
    """
    checked_class_names(metadata)
    if kind not in EVAL_SETS:
        raise DataError(f"Unknown eval set {kind!r}.", fix=f"use one of {', '.join(EVAL_SETS)}")
    if kind == "internal":
        _check_held_out(metadata, "test")
        internal, synthetic = internal_partitions(metadata, data_root)
        return EvaluationSet(
            test=partition(internal, "test"),
            val=_validation(internal, metadata),
            description=f"internal test partition of {Path(metadata['split_file']).name}",
            synthetic=synthetic,
        )
    if not path:
        raise DataError(f"eval set {kind!r} needs the path of its folder", fix="pass path=... (eval_path)")
    needs_internal = kind == "folder" or "val" not in trained_partitions(metadata)
    internal, synthetic = _internal_if_available(metadata, data_root) if needs_internal else (None, False)
    val = None if internal is None else _validation(internal, metadata)
    path = config.project_path(path)
    if kind == "isic2018":
        return EvaluationSet(load_isic2018_test(path), val, f"ISIC 2018 Task 3 test set at {path}", synthetic)
    if kind == "images":
        return EvaluationSet(load_image_folder(path), val, f"unlabelled images under {path}", synthetic)
    test, note = _unseen_folder_images(load_folder_dataset(path), internal)
    return EvaluationSet(test, val, f"folder set at {path} ({note})", synthetic)


def _check_held_out(metadata: dict[str, Any], name: str) -> None:
    if name in trained_partitions(metadata):
        raise CheckpointError(
            f"{metadata.get('checkpoint', 'The checkpoint')} was trained on the {name} partition of its "
            f"split ({', '.join(trained_partitions(metadata))}), so it has no held-out {name} images there.\n"
            "Fix: evaluate it on an external set: eval_set isic2018 (or folder) with eval_path."
        )


def _validation(internal: pd.DataFrame, metadata: dict[str, Any]) -> pd.DataFrame | None:
    """The validation partition that tunes the operating point; None when the checkpoint trained on it
    (its saved operating point, fitted on a run that held it out, is used then)."""
    return None if "val" in trained_partitions(metadata) else partition(internal, "val")


def internal_partitions(
    metadata: dict[str, Any], data_root: str | Path = "auto"
) -> tuple[pd.DataFrame, bool]:
    """HAM10000 with the ``partition`` of the checkpoint's saved split, and whether it is demo data."""
    _split_file(metadata)  # fail before loading any data
    source = resolve_data_root(data_root)
    return checkpoint_partitions(load_ham10000(source.root), metadata), source.is_demo


def checkpoint_partitions(frame: pd.DataFrame, metadata: dict[str, Any]) -> pd.DataFrame:
    """``frame`` with the ``partition`` column of the split the checkpoint was trained with."""
    split_file = _split_file(metadata)
    return apply_split(frame, load_split(split_file), source=split_file)


def _split_file(metadata: dict[str, Any]) -> str:
    """The split file recorded in a checkpoint's sidecar; CheckpointError if there is none."""
    split_file = metadata.get("split_file")
    if not split_file:
        raise CheckpointError(
            f"{metadata.get('checkpoint', 'The checkpoint')} records no split_file in its sidecar, so its "
            "test partition is unknown.\nFix: use a checkpoint trained by helpers.training.run (its sidecar "
            "names the split); to evaluate one without it, use an external eval set (isic2018 or folder)."
        )
    moved_here = config.SPLITS_DIR / Path(split_file).name  # a sidecar from another clone or machine
    return str(moved_here) if not Path(split_file).is_file() and moved_here.is_file() else split_file


def _internal_if_available(
    metadata: dict[str, Any], data_root: str | Path
) -> tuple[pd.DataFrame | None, bool]:
    if metadata.get("split_file"):
        return internal_partitions(metadata, data_root)
    warnings.warn(
        f"{metadata.get('checkpoint')} has no split_file: the threshold and temperature cannot be tuned on "
        "its validation partition; the saved operating point (or threshold 0.5, temperature 1) is used.",
        stacklevel=3,
    )
    return None, False


def partition(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of ``frame`` in partition ``name`` ("train", "val" or "test"); DataError if there are none."""
    part = frame[frame["partition"] == name].reset_index(drop=True)
    if part.empty:
        raise DataError(
            f"the split has no {name!r} images", fix="make a split with a non-zero fraction for it"
        )
    return part


def _unseen_folder_images(folder: pd.DataFrame, internal: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """The folder set without images of HAM10000 lesions in the train/val partitions, and what was done."""
    if internal is None or "ham_lesion_id" not in folder.columns:
        warnings.warn(
            "Cannot check this folder set for HAM10000 images the model has seen (needs the checkpoint's "
            "split and a ham10000_crossref.csv in the folder): its scores may be optimistic.",
            stacklevel=3,
        )
        return folder, "overlap with HAM10000 NOT checked"
    kept, removed = drop_ham10000_overlap(folder, internal[internal["partition"] != "test"])
    if kept.empty:
        raise DataError("every image of the folder set shows a lesion the model trained or was validated on")
    return kept, f"{len(removed)} images of lesions seen in training/validation removed"


def class_labels(frame: pd.DataFrame, class_names: Sequence[str]) -> np.ndarray | None:
    """Labels as indices into ``class_names`` (malignant 0/1 for binary models); None if unknown."""
    task = "binary" if tuple(class_names) == config.BINARY_CLASS_NAMES else "multiclass"
    labels = frame[LABEL_COLUMNS[task]].to_numpy(dtype=int)
    return labels if (labels >= 0).all() else None


def diagnosis_labels(frame: pd.DataFrame, class_names: Sequence[str]) -> np.ndarray | None:
    """Diagnosis indices for a multiclass model on data with known diagnoses, else None."""
    return None if tuple(class_names) == config.BINARY_CLASS_NAMES else class_labels(frame, class_names)


def calibration_view(
    frame: pd.DataFrame, probs: np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities on which calibration is measured: the model's own classes when the frame
    has them, else malignant 0/1 against P(malignant)."""
    labels = class_labels(frame, class_names)
    if labels is not None:
        return labels, probs
    return frame["malignant"].to_numpy(dtype=int), malignant_probability(probs, class_names)
