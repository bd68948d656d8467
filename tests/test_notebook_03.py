"""Notebook 03 (learning-rate sweep): the learning-rate list, and a demo-data sweep that saves one checkpoint
and one curve figure per learning rate, a comparison figure, and one Tracking row per run."""

from __future__ import annotations

import json

import pytest

from helpers.core import config
from helpers.core.errors import SkinLesionError
from helpers.training.settings import learning_rates

NOTEBOOK = config.NOTEBOOKS_DIR / "03-lr-sweep.ipynb"


def test_learning_rates_accept_numbers_written_as_text():
    assert learning_rates(["1e-4", 0.001, 3]) == [1e-4, 1e-3, 3.0]


@pytest.mark.parametrize("lrs", [[], ["fast"], [0.001, 0.001], [0.0, 0.1], "0.1"])
def test_learning_rates_reject_what_cannot_be_swept(lrs):
    with pytest.raises(SkinLesionError, match="lrs must be"):
        learning_rates(lrs)


@pytest.mark.slow
def test_notebook_sweeps_on_demo_data(tmp_path, monkeypatch):
    from helpers.runs.runner import run_notebooks

    monkeypatch.setenv("SKINLESION_ROOT", str(tmp_path))  # the kernel writes models/, figures/, data/ here
    source_before = NOTEBOOK.read_bytes()
    run_dir = run_notebooks(
        ["03"],
        config_file=config.CONFIGS_DIR / "demo.yaml",
        overrides={"lrs": ["1e-3", 0.003], "epochs": 3},  # as `-p lrs "[1e-3, 0.003]"` gives them
        runs_dir=tmp_path / "runs",
    )
    assert NOTEBOOK.read_bytes() == source_before
    base = "demo_light_cnn_multiclass"
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.svg")) == [
        f"{base}_lr0.001_curves.svg",
        f"{base}_lr0.003_curves.svg",
        f"{base}_lr_comparison.svg",
        f"{base}_training_images.svg",
    ]
    checkpoints = sorted((tmp_path / "models" / "demo").glob("*.h5"))
    run_names = {json.loads(p.with_suffix(".json").read_text())["run_name"] for p in checkpoints}
    assert run_names == {f"{base}_lr0.001", f"{base}_lr0.003"}
    tracking = tmp_path / "runs" / "Tracking-synthetic.md"
    rows = [line for line in tracking.read_text().splitlines() if "| 03-lr-sweep |" in line]
    assert len(rows) == 2 and all("SYNTHETIC" in row for row in rows)
    assert sum("best_lr=True" in row for row in rows) == 1
    assert "best learning rate:" in (run_dir / "03-lr-sweep.ipynb").read_text(encoding="utf-8")
