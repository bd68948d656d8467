"""Notebook 02 (training): the glue that turns its parameters into a TrainConfig, the shared split, and a
demo-data run whose checkpoint lands in models/demo/ and has learned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_notebooks import notebook_defaults

from helpers.core import config
from helpers.core.errors import SkinLesionError
from helpers.data.demo import make_demo_dataset
from helpers.data.source import DataSource, split_dataset
from helpers.runs.params import load_run_config, plan_parameters
from helpers.runs.runner import numbered_notebooks
from helpers.training.settings import TrainConfig, config_from_notebook

NOTEBOOK = config.NOTEBOOKS_DIR / "02-train.ipynb"


def _source(root: Path, is_demo: bool) -> DataSource:
    return DataSource(root=root, is_demo=is_demo, description="test data")


def test_config_from_notebook_maps_notebook_parameters(tmp_path):
    params = {"task": "binary", "arch": "light_cnn", "img_size": [48, 64], "weights": None, "max_images": 0}
    namespace = {**params, "run_name": "", "data_root": "auto", "pd": object()}  # other names are ignored
    demo = config_from_notebook(namespace, label="demo_ham10000", source=_source(tmp_path, True))
    assert demo.input_size == (48, 64) and demo.max_images is None and demo.task == "binary"
    assert demo.name == "demo_ham10000_light_cnn_binary"
    assert Path(demo.models_dir) == config.MODELS_DIR / "demo"
    real_source = _source(tmp_path, False)
    real = config_from_notebook({**params, "max_images": 50}, label="ham10000", source=real_source)
    assert real.name == "ham10000_light_cnn_binary" and real.max_images == 50
    assert Path(real.models_dir) == config.MODELS_DIR
    named = config_from_notebook({**params, "run_name": "mine"}, label="x", source=_source(tmp_path, True))
    assert named.name == "mine"
    assert config_from_notebook(params, label="x", source=_source(tmp_path, True), lr=0.5).lr == 0.5


def test_config_from_notebook_expands_variables_in_a_weights_path(tmp_path, monkeypatch):
    weights = tmp_path / "backbone.h5"
    monkeypatch.setenv("WEIGHTS_FOLDER", str(tmp_path))
    params = {"arch": "mobilenetv2", "task": "multiclass", "weights": "${WEIGHTS_FOLDER}/backbone.h5"}
    settings = config_from_notebook(params, label="x", source=_source(tmp_path, False))
    assert settings.weights == str(weights)


def test_every_notebook_default_reaches_train_config(tmp_path):
    defaults = notebook_defaults(NOTEBOOK)
    settings = config_from_notebook(defaults, label="ham10000", source=_source(tmp_path, False))
    expected = {name: value for name, value in defaults.items() if name in TrainConfig.__dataclass_fields__}
    expected["input_size"] = defaults["img_size"]
    params = settings.to_params()
    assert {name: params[name] for name in expected if name not in ("run_name", "max_images")} == {
        name: value for name, value in expected.items() if name not in ("run_name", "max_images")
    }


def test_train_config_rejects_a_misspelt_parameter():
    with pytest.raises(SkinLesionError, match="'epoch' \\(did you mean 'epochs'\\?\\)"):
        TrainConfig.from_params({"arch": "light_cnn", "task": "multiclass", "epoch": 3})


def test_split_dataset_makes_then_reuses_the_saved_split(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SPLITS_DIR", tmp_path / "splits")
    root = make_demo_dataset(tmp_path / "demo", lesions_per_class=3, image_size=(32, 40))
    options = {"seed": 1, "val_fraction": 0.2, "test_fraction": 0.2}
    frame, split_file = split_dataset(_source(root, True), "lesion_seed1", **options)
    assert split_file == tmp_path / "splits" / "demo_lesion_seed1.csv" and split_file.is_file()
    assert set(frame["partition"]) == {"train", "val", "test"}
    again, _ = split_dataset(_source(root, True), "lesion_seed1", **options)
    assert again["partition"].tolist() == frame["partition"].tolist()
    with pytest.raises(SkinLesionError, match="demo_lesion_seed1"):
        split_dataset(_source(root, True), "lesion_seed1", **{**options, "seed": 2})
    unnamed, unnamed_file = split_dataset(_source(root, True), **options)  # named by its seed
    assert unnamed_file == split_file and unnamed["partition"].tolist() == frame["partition"].tolist()
    _, other_seed = split_dataset(_source(root, True), **{**options, "seed": 2})
    assert other_seed.name == "demo_lesion_seed2.csv", "another seed is another split, not a clash"


@pytest.mark.parametrize("config_file", sorted(config.CONFIGS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_configs_give_valid_training_settings(config_file, tmp_path):
    run_config = load_run_config(config_file)
    declared = {path.stem: notebook_defaults(path) for path in numbered_notebooks()}
    plan = plan_parameters(run_config, declared, {}, list(declared))
    for stem in ("02-train", "03-lr-sweep"):
        params = {**declared[stem], **plan[stem]}
        lr = params.pop("lrs", [params.get("lr")])[0]
        settings = config_from_notebook(params, label=run_config.name, source=_source(tmp_path, False), lr=lr)
        assert settings.task == plan["04-test"].get("task", "multiclass"), "04 must test what 02 trains"
    for member in run_config.members:  # each ensemble member is valid training settings too
        params = {**declared["02-train"], **plan["02-train"], **member}
        assert config_from_notebook(params, label=run_config.name, source=_source(tmp_path, False)).task


@pytest.mark.slow
def test_notebook_trains_on_demo_data(tmp_path, monkeypatch):
    from helpers.runs.runner import run_notebooks

    monkeypatch.setenv("SKINLESION_ROOT", str(tmp_path))  # the kernel writes models/, figures/, data/ here
    source_before = NOTEBOOK.read_bytes()
    run_dir = run_notebooks(
        ["02"], config_file=config.CONFIGS_DIR / "demo.yaml", overrides={}, runs_dir=tmp_path / "runs"
    )
    assert (run_dir / "02-train.ipynb").is_file()
    assert NOTEBOOK.read_bytes() == source_before
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.svg")) == [
        "demo_light_cnn_multiclass_curves.svg",
        "demo_light_cnn_multiclass_training_images.svg",
    ]
    assert not list((tmp_path / "models").glob("*.h5"))  # demo checkpoints never mix with real ones
    (checkpoint,) = (tmp_path / "models" / "demo").glob("*.h5")
    sidecar = json.loads(checkpoint.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["run_name"] == "demo_light_cnn_multiclass"
    assert sidecar["split_file"] == str(tmp_path / "data" / "splits" / "demo_lesion_seed42.csv")
    assert sidecar["val_metric"] > 0.3  # chance is 1/7: the tiny CNN really learns the synthetic classes
    assert not (tmp_path / "Tracking.md").exists()  # demo runs never touch the committed log
    tracking = (tmp_path / "runs" / "Tracking-synthetic.md").read_text(encoding="utf-8")
    assert "| 02-train |" in tracking and "SYNTHETIC" in tracking and checkpoint.name in tracking
    executed = (run_dir / "02-train.ipynb").read_text(encoding="utf-8")
    assert "Total params" in executed  # the model summary is shown
