"""Glue for the training notebooks 02 and 03: the split training frame, a TrainConfig from their parameters.

Demo-data runs save their checkpoints in ``models/demo/`` so that the best checkpoint of ``models/`` (what
notebooks 04 and 05 take by default) can never be one trained on synthetic images.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from helpers import config
from helpers.data_source import DataSource
from helpers.errors import SkinLesionError
from helpers.ham10000 import DUPLICATES_FILE, load_duplicate_pairs, load_ham10000
from helpers.notebook_params import data_scoped
from helpers.splits import load_or_create_split, split_path
from helpers.training import TrainConfig

RENAMED_PARAMETERS: dict[str, str] = {"img_size": "input_size"}
"""Notebook parameter names that differ from the TrainConfig field they set."""


def split_frame(
    source: DataSource, split_name: str, *, seed: int, val_fraction: float, test_fraction: float
) -> tuple[pd.DataFrame, Path]:
    """The dataset with the ``partition`` of the saved lesion-level split (made as notebook 01 makes it,
    near-duplicate pairs kept together), and the split file."""
    frame = load_ham10000(source.root)
    duplicates_csv = source.root / DUPLICATES_FILE
    pairs = load_duplicate_pairs(duplicates_csv) if duplicates_csv.is_file() else []
    split_file = split_path(data_scoped(split_name, source.is_demo))
    split = load_or_create_split(
        frame,
        split_file.stem,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        duplicate_pairs=pairs,
    )
    return split, split_file


def models_dir(is_demo: bool) -> Path:
    """Where a run's checkpoints go: ``models/``, or ``models/demo/`` for runs on the synthetic data."""
    return config.MODELS_DIR / "demo" if is_demo else config.MODELS_DIR


def default_run_name(config_name: str, arch: str, task: str, is_demo: bool) -> str:
    """``{config}_{arch}_{task}`` (``demo_`` first on synthetic data): stable, so ``resume=True`` finds it."""
    return f"{data_scoped(config_name, is_demo)}_{arch}_{task}"


def train_config(params: Mapping[str, object], *, config_name: str, source: DataSource) -> TrainConfig:
    """A TrainConfig from the notebook's training parameters: ``img_size`` sets ``input_size``,
    ``max_images=0`` means all images, ``$VARIABLES`` in a weights path are expanded (configs can name
    ``${SKINLESION_SHARED}/...``), an empty ``run_name`` means the default name, demo data its own models
    folder."""
    values = {RENAMED_PARAMETERS.get(name, name): value for name, value in params.items()}
    values["max_images"] = values.get("max_images") or None
    if isinstance(values.get("weights"), str):
        values["weights"] = os.path.expandvars(values["weights"])
    if not values.get("run_name"):
        values["run_name"] = default_run_name(config_name, values["arch"], values["task"], source.is_demo)
    values.setdefault("models_dir", str(models_dir(source.is_demo)))
    return TrainConfig.from_params(values)


def learning_rates(lrs: Sequence[object]) -> list[float]:
    """The sweep's learning rates as distinct positive floats; numbers written as text (YAML 1.1 reads
    ``[1e-3]`` as ``["1e-3"]``) are converted, anything else is rejected naming the value."""
    try:
        rates = [float(lr) for lr in lrs]
    except (TypeError, ValueError) as error:
        raise SkinLesionError(f"lrs must be a list of numbers, e.g. [1e-4, 1e-3], got {lrs!r}") from error
    if not rates or min(rates) <= 0 or len(set(rates)) != len(rates):
        raise SkinLesionError(f"lrs must be a non-empty list of distinct positive numbers, got {lrs!r}")
    return rates
