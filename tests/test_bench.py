"""Smoke tests of the benchmark scripts on the synthetic demo data with tiny models, sizes and budgets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from builders import save_untrained_checkpoint, stored_weight_dtypes

from helpers.core import config
from helpers.core.errors import CheckpointError, DataError
from helpers.data.augment import AUGMENT_MODES
from helpers.data.source import DataSource
from helpers.runs.params import ConfigError
from helpers.training.settings import config_from_notebook

pytestmark = pytest.mark.slow


def _bench_script(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` (bench/ is a folder of scripts, not a package)."""
    path = config.PROJECT_ROOT / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_measures_every_stage_and_writes_json(tmp_path: Path) -> None:
    throughput = _bench_script("throughput")
    output = tmp_path / "throughput.json"
    argv = ["--data", "demo", "--archs", "light_cnn", "--sizes", "32x32", "--steps", "2", "--images", "64"]
    argv += ["--repeats", "2"]
    assert throughput.main([*argv, "--output", str(output)]) == output
    record = json.loads(output.read_text())
    assert set(record["pipeline"]["32x32"]) == {
        "decode_to_memory_once",
        *(f"{source}_{mode}" for source in ("files", "memory") for mode in ("none", *AUGMENT_MODES)),
    }
    (model,) = record["models"]
    assert model["arch"] == "light_cnn" and model["input_size"] == [32, 32]
    assert model["train_step_in_memory"] > 0 and model["inference"] > 0
    assert set(model["full_training_pipeline"]) == set(model["full_over_train_step"]) == set(AUGMENT_MODES)
    for mode, images_per_s in model["full_training_pipeline"].items():
        ratio = images_per_s / model["train_step_in_memory"]
        assert images_per_s > 0 and model["full_over_train_step"][mode] == pytest.approx(ratio, abs=0.01)
    assert record["repeats"] == 2 and record["augment_modes"] == list(AUGMENT_MODES)
    with pytest.raises(SystemExit):
        throughput.parse_args(["--sizes", "150by200"])


def test_accuracy_trains_within_budget_and_scores_val_and_test(tmp_path: Path, monkeypatch) -> None:
    accuracy = _bench_script("accuracy")
    output = tmp_path / "accuracy.json"
    overrides = {
        "arch": "light_cnn",
        "weights": "null",
        "img_size": "[32, 32]",
        "epochs": "2",
        "fine_tune_epochs": "0",
        "models_dir": str(tmp_path / "models"),
        "runs_dir": str(tmp_path / "runs"),
        "cache_dir": str(tmp_path / "cache"),
    }
    tracking = tmp_path / "Tracking.md"
    argv = ["--data", "demo", "--budget-minutes", "1", "--output", str(output), "--tracking", str(tracking)]
    accuracy.main(argv + [item for pair in overrides.items() for item in ("--set", *pair)])
    record = json.loads(output.read_text())
    assert record["is_demo"] and record["config"]["time_budget_s"] == 60
    assert record["config"]["arch"] == "light_cnn" and 1 <= record["epochs_run"] <= 2
    assert Path(record["checkpoint"]).is_file() and record["train_images_per_s"] > 0
    assert record["headline"] == "internal_tta" and record["external_set"] is None  # demo: no external
    assert set(record["metrics"]) == {"internal", "internal_tta"}
    for metrics in record["metrics"].values():
        point, low, high = metrics["balanced_accuracy"]
        assert 0 <= low <= point <= high <= 1 and 0 <= metrics["roc_auc"][0] <= 1
        assert set(metrics["recall"]) == set(config.CLASS_NAMES)
        by_confirmation = metrics[
            "recall_by_confirmation"
        ]  # the demo's one dx_type: equal to the class recall
        assert by_confirmation == {
            f"{dx}/synthetic": [pytest.approx(recall, abs=1e-4), metrics["support"][dx]]
            for dx, recall in metrics["recall"].items()
        }
        assert metrics["p_malignant_after_bias"] is False  # fitted now: summed before the class bias
    assert sum(record["metrics"]["internal"]["support"].values()) == record["partition_images"]["test"]
    operating_point = Path(record["checkpoint"]).with_suffix(".operating_point.json")
    assert len(json.loads(operating_point.read_text())["class_bias"]) == len(config.CLASS_NAMES)
    (row,) = [line for line in tracking.read_text().splitlines() if "bench/accuracy" in line]
    assert "SYNTHETIC" in row and "internal_tta_balanced_accuracy=" in row
    assert "epochs=2," in row and "seed=42" in row  # a --set variant's settings show in its row
    assert Path(record["checkpoint"]).name in row
    _check_release(accuracy, overrides, output, tmp_path, monkeypatch)
    _check_score(accuracy, Path(record["checkpoint"]), tmp_path)


def _check_release(accuracy, overrides, validation_output, tmp_path, monkeypatch) -> None:
    """--release: every partition, the validation run's selected epochs and operating point."""
    monkeypatch.setattr(config, "RELEASE_DIR", tmp_path / "release")
    validation = json.loads(validation_output.read_text())
    output = tmp_path / "release.json"
    argv = ["--data", "demo", "--budget-minutes", "1", "--output", str(output), "--tracking"]
    argv += [str(tmp_path / "Tracking.md"), "--release", str(validation_output), "--name", "variant"]
    forgotten = {name: value for name, value in overrides.items() if name != "img_size"}
    with pytest.raises(ConfigError, match=r"(?s)input_size \[150, 200\] \(validation run: \[32, 32\]\).*Fix"):
        accuracy.main(argv + [item for pair in forgotten.items() for item in ("--set", *pair)])
    assert not output.exists()  # refused before training
    accuracy.main(argv + [item for pair in overrides.items() for item in ("--set", *pair)])
    record = json.loads(output.read_text())
    released = Path(record["checkpoint"])
    synthetic_releases = tmp_path / "release-synthetic"  # demo data: never in the committed release folder
    assert released == synthetic_releases / f"variant_{overrides['arch']}.h5" and released.is_file()
    assert record["release_of"] == str(validation_output)
    assert "| variant |" in (tmp_path / "Tracking.md").read_text()  # the row names the --name variant
    assert record["config"]["train_partitions"] == ["train", "val", "test"]
    head_epochs = validation["config"]["epochs"]
    assert record["config"]["fine_tune_epochs"] == max(1, validation["selected_epoch"] - head_epochs)
    assert "internal" not in record["metrics"]  # no held-out internal image is left
    assert json.loads(released.with_suffix(".json").read_text())["trained_on"] == ["train", "val", "test"]
    point = json.loads(released.with_suffix(".operating_point.json").read_text())
    validated = json.loads(Path(validation["checkpoint"]).with_suffix(".operating_point.json").read_text())
    assert point["class_bias"] == validated["class_bias"]
    published = released.stat().st_mtime_ns
    with pytest.raises(ConfigError, match=r"(?s)variant_light_cnn.h5 exists.*Fix: choose another --name"):
        accuracy.main(argv + [item for pair in overrides.items() for item in ("--set", *pair)])
    assert released.stat().st_mtime_ns == published  # refused before training, the release untouched
    with pytest.raises(DataError, match="of a release"):  # a release's own record is no validation run
        accuracy.main(["--data", "demo", "--release", str(output)])


def _check_score(accuracy, trained: Path, tmp_path: Path) -> None:
    """--score: an existing checkpoint scored without training; --against: paired differences (A - B)."""
    metadata = json.loads(trained.with_suffix(".json").read_text())
    untrained = save_untrained_checkpoint(
        tmp_path / "untrained.h5",
        input_size=tuple(metadata["input_size"]),
        split_file=metadata["split_file"],
        trained_on=["train"],
    )
    output = tmp_path / "score.json"
    argv = ["--data", "demo", "--score", str(trained), "--against", str(untrained), "--n-bootstrap", "20"]
    figures = tmp_path / "score_figures"
    argv += ["--figures", str(figures)]
    accuracy.main(argv + ["--output", str(output), "--tracking", str(tmp_path / "Tracking.md")])
    record = json.loads(output.read_text())
    assert "history" not in record and set(record["paired_difference"]) == {"internal", "internal_tta"}
    drawn = [path.name for path in figures.iterdir()]  # no curves without training: the confusion matrix
    assert drawn == [f"{trained.stem}_internal_tta_confusion_matrix.svg"]
    ours, theirs = record["metrics"]["internal"], record["against_metrics"]["internal"]
    difference = record["paired_difference"]["internal"]["balanced_accuracy"]
    assert difference[0] == pytest.approx(ours["balanced_accuracy"][0] - theirs["balanced_accuracy"][0])
    assert difference[1] <= difference[0] <= difference[2]
    assert "| score |" in (tmp_path / "Tracking.md").read_text()
    assert not untrained.with_suffix(".operating_point.json").exists(), "--against writes nothing beside BASE"


def test_release_refuses_an_unusable_validation_run_before_training(tmp_path: Path, monkeypatch) -> None:
    """A record without the selected epoch, or whose checkpoint has no operating point, stops the release at
    once with the file and the fix, not after an hour of training."""
    accuracy = _bench_script("accuracy")
    monkeypatch.setattr(accuracy, "train_members", lambda *args: pytest.fail("trained on a bad record"))
    record = tmp_path / "validation.json"
    record.write_text(json.dumps({"config": {"epochs": 1, "run_name": "r"}, "checkpoint": "m.h5"}))
    with pytest.raises(DataError, match="selected_epoch") as refused:
        accuracy.main(["--data", "demo", "--release", str(record)])
    assert str(record) in str(refused.value) and "Fix:" in str(refused.value)
    checkpoint = tmp_path / "without_operating_point.h5"
    record.write_text("[]")
    with pytest.raises(DataError, match="Not a usable validation run record"):
        accuracy.main(["--data", "demo", "--release", str(record)])
    complete = {"config": {"epochs": 1, "run_name": "r"}, "checkpoint": str(checkpoint), "selected_epoch": 3}
    record.write_text(json.dumps(complete))
    with pytest.raises(CheckpointError, match="operating point not found"):
        accuracy.main(["--data", "demo", "--release", str(record)])


def test_an_ensemble_recipe_trains_its_members_in_one_budget_and_scores_their_average(
    tmp_path: Path, monkeypatch
) -> None:
    """A recipe with members and no streams: each trained in turn (the second with what the first left of the
    budget), one ensemble checkpoint scored, each member's record kept, their curves drawn, one Tracking.md
    row."""
    accuracy = _bench_script("accuracy")
    recipe = tmp_path / "ensemble.yaml"
    small = {"arch": "light_cnn", "weights": None, "epochs": 1, "fine_tune_epochs": 0}
    members = [{**small, "img_size": [32, 32]}, {**small, "img_size": [40, 40], "seed": 7}]
    recipe.write_text(
        json.dumps({"name": "tiny_ensemble", "extends": str(accuracy.DEFAULT_RECIPE), "members": members})
    )
    output, tracking, figures = tmp_path / "e.json", tmp_path / "Tracking.md", tmp_path / "figures"
    argv = ["--data", "demo", "--config", str(recipe), "--budget-minutes", "5", "--n-bootstrap", "20"]
    argv += ["--output", str(output), "--tracking", str(tracking), "--figures", str(figures)]
    for name in ("models_dir", "runs_dir", "cache_dir"):
        argv += ["--set", name, str(tmp_path / name)]
    accuracy.main(argv)
    record = json.loads(output.read_text())
    first, second = record["members"]
    assert [first["config"]["input_size"], second["config"]["input_size"]] == [[32, 32], [40, 40]]
    assert second["started_after_s"] >= first["ended_after_s"] >= first["train_wall_time_s"] - 0.1  # in turn
    assert second["config"]["time_budget_s"] == 300 - second["started_after_s"]
    total = first["train_wall_time_s"] + second["train_wall_time_s"]
    assert record["train_wall_time_s"] == second["ended_after_s"] >= total - 0.11  # each rounded to 0.1 s
    assert first["stream"] == second["stream"] == 1 and "streams" not in record
    ensemble = Path(record["checkpoint"])
    assert ensemble.name == "tiny_ensemble.h5" and ensemble.parent == tmp_path / "models_dir"
    sidecar = json.loads(ensemble.with_suffix(".json").read_text())
    assert [member["checkpoint"] for member in sidecar["members"]] == [
        first["checkpoint"],
        second["checkpoint"],
    ]
    assert ensemble.with_suffix(".operating_point.json").is_file()  # fitted on validation when scored
    assert set(record["metrics"]) == {"internal", "internal_tta"} and "config" not in record
    (row,) = [line for line in tracking.read_text().splitlines() if "bench/accuracy" in line]
    assert "member1=light_cnn [32, 32] seed 42" in row and "member2=light_cnn [40, 40] seed 7" in row
    drawn = {path.name for path in figures.iterdir()}
    assert {"tiny_ensemble_member1_curves.svg", "tiny_ensemble_member2_curves.svg"} <= drawn
    _check_ensemble_release(accuracy, argv, output, tmp_path, monkeypatch)


def _check_ensemble_release(accuracy, argv, validation_output, tmp_path, monkeypatch) -> None:
    """--release with an ensemble recipe's record: every member on every partition for its own selected
    epochs, saved as one half-precision ensemble with the validated ensemble's operating point; here with
    the recipe's members in two streams, trained at the same time by two other processes (streams change
    where members train, not how, so the validation run's settings still hold)."""
    monkeypatch.setattr(config, "RELEASE_DIR", tmp_path / "release")
    validation = json.loads(validation_output.read_text())
    with pytest.raises(ConfigError, match="trained 2 model"):  # the recipe without members: refused at once
        accuracy.main(["--data", "demo", "--release", str(validation_output)])
    recipe = Path(argv[argv.index("--config") + 1])
    in_streams = recipe.with_name("in_streams.yaml")
    in_streams.write_text(
        json.dumps({"name": "tiny_ensemble", "extends": recipe.name, "streams": [[2], [1]]})
    )
    argv = [in_streams if value == str(recipe) else value for value in argv]
    output = tmp_path / "ensemble_release.json"
    accuracy.main([*map(str, argv), "--release", str(validation_output), "--output", str(output)])
    record = json.loads(output.read_text())
    assert record["streams"] == [[2], [1]]
    first, second = record["members"]  # in member order, each trained by its own stream's process
    assert (first["stream"], second["stream"]) == (2, 1)
    assert max(first["started_after_s"], second["started_after_s"]) < min(
        first["ended_after_s"], second["ended_after_s"]
    )  # at the same time
    assert first["config"]["version"] != second["config"]["version"]  # one backbone, one folder: no collision
    assert record["train_wall_time_s"] == max(first["ended_after_s"], second["ended_after_s"])
    released = Path(record["checkpoint"])
    assert released == tmp_path / "release-synthetic" / "tiny_ensemble_all_data.h5"
    sidecar = json.loads(released.with_suffix(".json").read_text())
    assert stored_weight_dtypes(released) == {
        "float16"
    }  # the ensemble's weights in half precision (the 10 MiB limit)
    assert sidecar["weights_dtype"] == "float16" and sidecar["trained_on"] == ["test", "train", "val"]
    for member, validated in zip(record["members"], validation["members"], strict=True):
        assert member["config"]["train_partitions"] == ["train", "val", "test"]
        head_epochs = validated["config"]["epochs"]
        assert member["config"]["fine_tune_epochs"] == max(1, validated["selected_epoch"] - head_epochs)
    point = json.loads(released.with_suffix(".operating_point.json").read_text())
    validated_point = Path(validation["checkpoint"]).with_suffix(".operating_point.json")
    assert point["class_bias"] == json.loads(validated_point.read_text())["class_bias"]
    assert "internal" not in record["metrics"]  # no held-out internal image is left


def test_a_release_cut_short_by_the_budget_is_named_in_the_output_and_the_tracking_row(
    tmp_path: Path, capsys
) -> None:
    accuracy = _bench_script("accuracy")
    config_of = {"arch": "mobilenetv2", "input_size": [150, 200], "seed": 1, "time_budget_s": 3600}
    members = [
        {"config": config_of, "epochs_run": 9, "stopped_by_budget": flag, "checkpoint": "m.h5"}
        for flag in (False, True)
    ]
    accuracy.warn_if_cut_short(members, 60)
    printed = capsys.readouterr().out
    assert (
        "model 2 of 2 (mobilenetv2 [150, 200]) was stopped by the 60-minute budget after epoch 9" in printed
    )
    assert "model 1" not in printed and "Fix: raise --budget-minutes" in printed
    record = {"name": "r", "is_demo": True, "train_wall_time_s": 60.0, "members": members}
    record |= {"metrics": {}, "checkpoint": "e.h5", "budget_minutes": 60, "streams": [[2], [1]]}
    tracking = tmp_path / "Tracking.md"
    accuracy.track(record, tmp_path / "r.json", tracking)
    row = tracking.read_text()
    assert "stopped_by_budget=model 2" in row and "streams=[[2], [1]]" in row
    assert "time_budget_s=3600" in row  # the common budget, not what a member had left of it


def test_the_shipped_ensemble_recipe_is_the_recipe_at_two_sizes_and_on_two_backbones(tmp_path: Path) -> None:
    accuracy = _bench_script("accuracy")
    shipped = config.CONFIGS_DIR / "recipe_cpu_ensemble.yaml"
    name, _, members, streams = accuracy.recipe_parameters(shipped, [])
    _, _, (recipe,), no_streams = accuracy.recipe_parameters(accuracy.DEFAULT_RECIPE, [])
    assert name == "recipe_cpu_ensemble" and len(members) == 3 and no_streams == []
    assert members[0] == recipe  # the first member is the recipe itself, all three on its full schedule
    assert members[1] == {**recipe, "img_size": [225, 300]}
    assert members[2] == {**recipe, "arch": "mobilenetv2", "weights": "imagenet"}
    assert streams == [[1], [2], [3]]  # the three at the same time, each in its own process
    with pytest.raises(ConfigError, match=r"--set: \['imgsize'\] are no training parameters"):
        accuracy.recipe_parameters(accuracy.DEFAULT_RECIPE, [("imgsize", "[1, 2]")])  # never silently ignored
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        json.dumps({"name": "t", "extends": str(accuracy.DEFAULT_RECIPE), "members": [{}, {"sed": 7}]})
    )
    with pytest.raises(ConfigError, match=r"typo.yaml: members: \['sed'\]"):
        accuracy.recipe_parameters(typo, [])


def test_accuracy_recipe_expands_variables_in_the_weights_path(monkeypatch) -> None:
    accuracy = _bench_script("accuracy")
    monkeypatch.setenv("SKINLESION_SHARED", "/somewhere")
    name, data, members, _ = accuracy.recipe_parameters(accuracy.DEFAULT_RECIPE, [("fine_tune_epochs", "3")])
    assert name == "recipe_cpu" and data["split_name"] == "lesion_seed42"
    (training,) = members  # a single-model recipe
    source = DataSource(root=Path("/data/HAM10000"), is_demo=False, description="real")
    settings = config_from_notebook(training, label=name, source=source)
    assert settings.weights.startswith("/somewhere/keras/weights/") and settings.fine_tune_epochs == 3


def test_demo_probe_answers_every_input_and_keeps_serving(tmp_path: Path) -> None:
    probe = _bench_script("demo_probe")
    output = tmp_path / "probe.json"
    assert probe.main(["--burst", "4", "--threads", "2", "--rounds", "1", "--output", str(output)]) == output
    record = json.loads(output.read_text())
    answers = {name: result["answer"] for name, result in record["probes"].items()}
    assert answers["damaged-middle JPEG"].startswith("error: Unusable image: damaged JPEG data")
    assert answers["truncated JPEG"].startswith("error: Unusable image: truncated JPEG")
    assert answers["corrupt (random bytes as .jpg)"].startswith("error: Unusable image: not an image")
    assert "Warning: image of 1x1 pixels" in answers["tiny 1x1 PNG"]
    assert "P(malignant)" in answers["huge 6000x4500 JPEG"] and "P(malignant)" in answers["good"]
    (burst,) = record["bursts"]
    assert burst["answered"] == 4 and burst["predictions"] == 3 and burst["clear_errors"] == 1
    assert record["serving_after_bursts"] and burst["rss_mb_after"] > 0


def test_accuracy_records_never_replace_one_another(tmp_path: Path, monkeypatch) -> None:
    """Two runs of a day get two records (a variant's name in its file name, then -2, -3...): the second
    run of 2026-12-02 used to overwrite the recipe's record without a word."""
    accuracy = _bench_script("accuracy")
    monkeypatch.setattr(config, "BENCH_RESULTS_DIR", tmp_path)
    variant = accuracy.parse_args(["--name", "short", "--release", "run.json"])
    first = accuracy.default_output(variant)
    assert first.name.endswith("-short-release.json")
    first.write_text("{}")
    second = accuracy.default_output(variant)
    assert second.name == first.name.replace(".json", "-2.json")
    scored = accuracy.default_output(accuracy.parse_args(["--score", "models/a.h5"]))
    assert scored.name.endswith("-score-a.json")
