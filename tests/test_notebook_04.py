"""Notebook 04 (test-set evaluation): a full run on the demo data with two tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import save_untrained_checkpoint, split_demo_data

from helpers.core import config

NOTEBOOK = config.NOTEBOOKS_DIR / "04-test.ipynb"
FIGURES = ("confusion_matrix", "mistakes", "pr", "reliability", "roc", "samples")


def _demo_checkpoints(root: Path) -> list[Path]:
    """Two untrained checkpoints of different input sizes whose sidecars point at a demo-data split."""
    # the same demo dataset the kernel's data_root="demo" reuses
    _, _, split_file = split_demo_data(root / "data" / "demo", root / "data" / "splits" / "demo_split.csv")
    return [
        save_untrained_checkpoint(
            root / "models" / f"{arch}_v1_01_0.500.h5",
            arch=arch,
            input_size=size,
            split_file=str(split_file),
            val_metric=0.5,
        )
        for arch, size in (("light_cnn", (75, 100)), ("simple_cnn", (48, 64)))
    ]


@pytest.mark.slow
def test_notebook_runs_on_demo_data(tmp_path, monkeypatch):
    from helpers.runs.runner import run_notebooks

    monkeypatch.setenv(
        "SKINLESION_ROOT", str(tmp_path)
    )  # the kernel writes figures/, data/, Tracking.md here
    checkpoints = _demo_checkpoints(tmp_path)
    source_before = NOTEBOOK.read_bytes()
    run_dir = run_notebooks(
        ["04"],
        config_file=config.CONFIGS_DIR / "demo.yaml",
        overrides={"checkpoints": [str(path) for path in checkpoints], "n_bootstrap": 20},
        runs_dir=tmp_path / "runs",
    )
    assert (run_dir / "04-test.ipynb").is_file()
    assert NOTEBOOK.read_bytes() == source_before
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.svg"))
    assert figures == [f"demo_04_internal_{name}.svg" for name in FIGURES]
    assert all(path.with_name(f"{path.stem}.operating_point.json").is_file() for path in checkpoints)
    tracking = (tmp_path / "runs" / "Tracking-synthetic.md").read_text(encoding="utf-8")
    assert "| 04-test |" in tracking and "SYNTHETIC" in tracking and "balanced_accuracy=" in tracking
