"""Notebook 02 (training): a clean source declaring every training parameter, the glue that turns those
parameters into a TrainConfig, and a demo-data run whose checkpoint lands in models/demo/ and has learned."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from helpers import config
from helpers.data_source import DataSource
from helpers.demo_data import make_demo_dataset
from helpers.errors import SkinLesionError
from helpers.notebook_params import declared_parameters, load_run_config, plan_parameters
from helpers.runner import numbered_notebooks
from helpers.train_notebook import split_frame, train_config
from helpers.training import TrainConfig

NOTEBOOK = config.NOTEBOOKS_DIR / "02-train.ipynb"
TRAINING_PARAMETERS = (
    "task",
    "arch",
    "img_size",
    "epochs",
    "lr",
    "batch_size",
    "weights",
    "fine_tune_layers",
    "fine_tune_epochs",
    "fine_tune_lr",
    "class_weighting",
    "balanced_sampling",
    "augment",
    "augment_mode",
    "lr_schedule",
    "patience",
    "time_budget_s",
    "dropout",
    "label_smoothing",
    "seed",
    "max_images",
    "resume",
    "cache_features",
    "run_name",
)
DATA_PARAMETERS = ("config_name", "data_root", "split_name", "split_seed", "val_fraction", "test_fraction")


def notebook_defaults(notebook_path: Path) -> dict[str, object]:
    """The values of a notebook's ``parameters`` cell (papermill reports them as source text)."""
    return {name: ast.literal_eval(text) for name, text in declared_parameters(notebook_path).items()}


def check_clean_source(notebook_path: Path, parameters: tuple[str, ...]) -> None:
    """No outputs, a python3 kernel, a first code cell tagged ``parameters`` that papermill fully parses."""
    notebook = json.loads(notebook_path.read_text(encoding="utf-8"))
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert code_cells[0]["metadata"]["tags"] == ["parameters"]
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code_cells)
    assert set(parameters) <= set(declared_parameters(notebook_path))


def test_notebook_source_is_clean():
    check_clean_source(NOTEBOOK, DATA_PARAMETERS + TRAINING_PARAMETERS)


def _source(root: Path, is_demo: bool) -> DataSource:
    return DataSource(root=root, is_demo=is_demo, description="test data")


def test_train_config_maps_notebook_parameters(tmp_path):
    params = {"task": "binary", "arch": "light_cnn", "img_size": [48, 64], "weights": None, "max_images": 0}
    demo = train_config({**params, "run_name": ""}, config_name="ham10000", source=_source(tmp_path, True))
    assert demo.input_size == (48, 64) and demo.max_images is None and demo.task == "binary"
    assert demo.name == "demo_ham10000_light_cnn_binary"
    assert Path(demo.models_dir) == config.MODELS_DIR / "demo"
    real = train_config({**params, "max_images": 50}, config_name="ham10000", source=_source(tmp_path, False))
    assert real.name == "ham10000_light_cnn_binary" and real.max_images == 50
    assert Path(real.models_dir) == config.MODELS_DIR
    named = train_config({**params, "run_name": "mine"}, config_name="x", source=_source(tmp_path, True))
    assert named.name == "mine"


def test_train_config_expands_variables_in_a_weights_path(tmp_path, monkeypatch):
    weights = tmp_path / "backbone.h5"
    monkeypatch.setenv("WEIGHTS_FOLDER", str(tmp_path))
    params = {"arch": "mobilenetv2", "task": "multiclass", "weights": "${WEIGHTS_FOLDER}/backbone.h5"}
    assert train_config(params, config_name="x", source=_source(tmp_path, False)).weights == str(weights)


def test_notebook_defaults_are_the_train_config_defaults(tmp_path):
    defaults = notebook_defaults(NOTEBOOK)
    training = {name: defaults[name] for name in TRAINING_PARAMETERS}
    settings = train_config(training, config_name="x", source=_source(tmp_path, False))
    expected = TrainConfig(run_name=settings.run_name, models_dir=settings.models_dir)
    assert settings.to_params() == expected.to_params()


def test_train_config_rejects_a_misspelt_parameter(tmp_path):
    with pytest.raises(SkinLesionError, match="'epoch' \\(did you mean 'epochs'\\?\\)"):
        train_config(
            {"arch": "light_cnn", "task": "multiclass", "epoch": 3},
            config_name="x",
            source=_source(tmp_path, False),
        )


def test_split_frame_makes_then_reuses_the_saved_split(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SPLITS_DIR", tmp_path / "splits")
    root = make_demo_dataset(tmp_path / "demo", lesions_per_class=3, image_size=(32, 40))
    options = {"seed": 1, "val_fraction": 0.2, "test_fraction": 0.2}
    frame, split_file = split_frame(_source(root, True), "lesion_seed1", **options)
    assert split_file == tmp_path / "splits" / "demo_lesion_seed1.csv" and split_file.is_file()
    assert set(frame["partition"]) == {"train", "val", "test"}
    again, _ = split_frame(_source(root, True), "lesion_seed1", **options)
    assert again["partition"].tolist() == frame["partition"].tolist()
    with pytest.raises(SkinLesionError, match="demo_lesion_seed1"):
        split_frame(_source(root, True), "lesion_seed1", **{**options, "seed": 2})


@pytest.mark.parametrize("config_file", sorted(config.CONFIGS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_configs_give_valid_training_settings(config_file, tmp_path):
    run_config = load_run_config(config_file)
    declared = {path.stem: notebook_defaults(path) for path in numbered_notebooks()}
    plan = plan_parameters(run_config, declared, {}, list(declared))
    for stem in ("02-train", "03-lr-sweep"):
        params = {**declared[stem], **plan[stem]}
        lr = params.pop("lrs", [params.get("lr")])[0]
        training = {name: params[name] for name in TRAINING_PARAMETERS if name in params}
        settings = train_config(
            {**training, "lr": lr}, config_name=run_config.name, source=_source(tmp_path, False)
        )
        assert settings.task == plan["04-test"].get("task", "multiclass"), "04 must test what 02 trains"


@pytest.mark.slow
def test_notebook_trains_on_demo_data(tmp_path, monkeypatch):
    from helpers.runner import run_notebooks

    monkeypatch.setenv("SKINLESION_ROOT", str(tmp_path))  # the kernel writes models/, figures/, data/ here
    source_before = NOTEBOOK.read_bytes()
    run_dir = run_notebooks(
        ["02"], config_file=config.CONFIGS_DIR / "demo.yaml", overrides={}, runs_dir=tmp_path / "runs"
    )
    assert (run_dir / "02-train.ipynb").is_file()
    assert NOTEBOOK.read_bytes() == source_before
    assert [p.name for p in (tmp_path / "figures").glob("*.svg")] == ["demo_light_cnn_multiclass_curves.svg"]
    assert not list((tmp_path / "models").glob("*.h5"))  # demo checkpoints never mix with real ones
    (checkpoint,) = (tmp_path / "models" / "demo").glob("*.h5")
    sidecar = json.loads(checkpoint.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["run_name"] == "demo_light_cnn_multiclass"
    assert sidecar["split_file"] == str(tmp_path / "data" / "splits" / "demo_lesion_seed42.csv")
    assert sidecar["val_metric"] > 0.3  # chance is 1/7: the tiny CNN really learns the synthetic classes
    tracking = (tmp_path / "Tracking.md").read_text(encoding="utf-8")
    assert "| 02-train |" in tracking and "SYNTHETIC" in tracking and checkpoint.name in tracking
