"""The 05-gradcam notebook: an end-to-end run on demo data with a tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from builders import save_untrained_checkpoint, split_demo_data

from helpers.core import config

NOTEBOOK = config.NOTEBOOKS_DIR / "05-gradcam.ipynb"


def _tiny_checkpoint(root: Path) -> Path:
    """A random 7-class CNN saved in ``root/models/demo`` (where configs/demo.yaml points notebook 05) with a
    sidecar naming a lesion split of the demo data."""
    # the kernel reuses this demo dataset
    _, _, split_file = split_demo_data(root / "data" / "demo", root / "data" / "splits" / "demo_tiny.csv")
    return save_untrained_checkpoint(
        root / "models" / "demo" / "simple_cnn_v1_01_0.200.h5",
        arch="simple_cnn",
        input_size=(48, 64),
        split_file=str(split_file),
        monitor="val_balanced_accuracy",
        val_metric=0.2,
    )


@pytest.mark.slow
def test_notebook_runs_on_demo_data(tmp_path, monkeypatch):
    from helpers.runs.runner import run_notebooks

    _tiny_checkpoint(tmp_path)
    monkeypatch.setenv("SKINLESION_ROOT", str(tmp_path))  # the kernel reads models/, writes figures/ here
    source_before = NOTEBOOK.read_bytes()
    run_dir = run_notebooks(
        ["05"],
        config_file=config.CONFIGS_DIR / "demo.yaml",
        overrides={"n_localization": 8},  # checkpoint "models/demo" -> the best (only) one there
        runs_dir=tmp_path / "runs",
    )
    assert (run_dir / "05-gradcam.ipynb").is_file()
    assert NOTEBOOK.read_bytes() == source_before
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.svg"))
    assert figures and all(name.startswith("demo_05_explanations_") for name in figures)
    table = pd.read_csv(tmp_path / "figures" / "demo_05_localization.csv", index_col=0)
    assert table.loc["all", "n"] == 8 and {"energy_gradcam", "energy_gaussian", "mask_area"} <= set(table)
    tracking_text = (tmp_path / "runs" / "Tracking-synthetic.md").read_text(encoding="utf-8")
    assert "| 05-gradcam |" in tracking_text and "SYNTHETIC" in tracking_text
