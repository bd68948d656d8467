"""Static checks of every numbered notebook: clean committed source, a plain-literal parameters cell whose
defaults are the real-data configuration's, short cells, and one training parameter list for 02 and 03."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from helpers.core import config
from helpers.runs.params import declared_parameters, load_run_config
from helpers.runs.runner import numbered_notebooks
from helpers.training.settings import NOTEBOOK_NAMES, TrainConfig

NOTEBOOKS = numbered_notebooks()
MAX_CELL_LINES = 12
"""A code cell longer than this holds logic that belongs in helpers/ (the parameters cell excepted)."""


def notebook_defaults(path: Path) -> dict[str, object]:
    """The values of a notebook's ``parameters`` cell (papermill reports them as source text)."""
    return {name: ast.literal_eval(text) for name, text in declared_parameters(path).items()}


def code_cells(path: Path) -> list[dict]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_there_are_five_numbered_notebooks() -> None:
    assert [path.stem for path in NOTEBOOKS] == ["01-eda", "02-train", "03-lr-sweep", "04-test", "05-gradcam"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_source_is_clean_and_parameters_come_first(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = code_cells(path)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert cells[0]["metadata"]["tags"] == ["parameters"]
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in cells)
    assert notebook_defaults(path)  # every default is a plain literal
    assert notebook_defaults(path)["config_name"] == ""  # "": named like `skinlesion run` names it


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_cells_stay_short(path: Path) -> None:
    long_cells = [cell["source"] for cell in code_cells(path)[1:] if len(cell["source"]) > MAX_CELL_LINES]
    assert long_cells == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_defaults_are_the_real_data_configuration(path: Path) -> None:
    """Opened in JupyterLab, a notebook does what `skinlesion run` does with configs/ham10000.yaml."""
    run_config = load_run_config(config.CONFIGS_DIR / "ham10000.yaml")
    defaults = notebook_defaults(path)
    configured = {**run_config.parameters, **run_config.notebooks.get(path.stem, {})}
    differing = {
        name: (defaults[name], value)
        for name, value in configured.items()
        if name in defaults and defaults[name] != value
    }
    assert differing == {}


def test_02_and_03_declare_one_training_parameter_list() -> None:
    train, sweep = (
        notebook_defaults(config.NOTEBOOKS_DIR / name) for name in ("02-train.ipynb", "03-lr-sweep.ipynb")
    )
    assert set(train) - {"lr"} == set(sweep) - {"lrs"}
    fields = {NOTEBOOK_NAMES.get(name, name) for name in train} & set(TrainConfig.__dataclass_fields__)
    assert len(fields) >= 20  # the training parameters reach TrainConfig by name
    head_only = {"fine_tune_layers", "fine_tune_epochs"}  # a sweep compares the head phase
    assert {name: train[name] for name in set(sweep) - {"lrs"} - head_only} == {
        name: sweep[name] for name in set(sweep) - {"lrs"} - head_only
    }
