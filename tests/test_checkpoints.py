"""helpers.models.checkpoints: naming, versions, atomic no-overwrite saves, sidecars, clear load errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from helpers.core import config
from helpers.core.errors import CheckpointError
from helpers.models import checkpoints
from helpers.models.build import build_model

SIZE = (64, 64)
METADATA = {
    "task": "multiclass",
    "class_names": list(config.CLASS_NAMES),
    "input_size": list(SIZE),
    "arch": "light_cnn",
    "split_file": "data/splits/ham10000_lesion_split.csv",
    "params": {"learning_rate": np.float64(1e-3), "epochs": np.int64(3)},
    "history": {"val_macro_f1": np.array([0.5, 0.625], dtype="float32")},
    "monitor": "val_macro_f1",
    "val_metric": np.float32(0.625),
}

RELOAD_AND_PREDICT = """
import sys
import keras
import numpy as np
images = np.load(sys.argv[1])
for path in sys.argv[2:]:
    model = keras.models.load_model(path, compile=False)
    np.save(path + ".predictions.npy", keras.ops.convert_to_numpy(model(images, training=False)))
"""


@pytest.fixture(scope="module")
def light_model():
    return build_model("light_cnn", weights=None, input_size=SIZE)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, size=(3, *SIZE, 3)).astype("float32")


def test_checkpoint_name_format():
    assert checkpoints.checkpoint_name("mobilenetv2", 1, 12, 0.7814) == "mobilenetv2_v1_12_0.781.h5"
    assert checkpoints.checkpoint_name("light_cnn", 10, 3, 0.5) == "light_cnn_v10_03_0.500.h5"
    with pytest.raises(ValueError):
        checkpoints.checkpoint_name("light_cnn", 0, 3, 0.5)
    with pytest.raises(ValueError):
        checkpoints.checkpoint_name("../evil", 1, 3, 0.5)


def test_next_version_counts_per_architecture(tmp_path):
    assert checkpoints.next_version("mobilenetv3", tmp_path / "absent") == 1
    for name in [
        "mobilenetv3_v1_04_0.700.h5",
        "mobilenetv3_v3_10_0.720.h5",
        "mobilenetv3small_v7_02_0.650.h5",
        ".mobilenetv3_v9_01_0.100.h5.tmp123.h5",
        "mobilenetv3_v8_notes.txt",
    ]:
        (tmp_path / name).write_bytes(b"")
    assert checkpoints.next_version("mobilenetv3", tmp_path) == 4
    assert checkpoints.next_version("mobilenetv3small", tmp_path) == 8
    assert checkpoints.next_version("light_cnn", tmp_path) == 1


def test_saved_models_reload_identically_in_a_fresh_process(tmp_path, light_model, images):
    saved = {}
    for arch in ("mobilenetv2", "mobilenetv3small", "light_cnn"):
        model = light_model if arch == "light_cnn" else build_model(arch, weights=None, input_size=SIZE)
        path = checkpoints.save_checkpoint(
            model, tmp_path / f"{arch}_v1_01_0.500.h5", {**METADATA, "arch": arch}
        )
        saved[path] = keras.ops.convert_to_numpy(model(images, training=False))
    np.save(tmp_path / "images.npy", images)

    command = [sys.executable, "-c", RELOAD_AND_PREDICT, str(tmp_path / "images.npy"), *map(str, saved)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for path, expected in saved.items():
        assert np.array_equal(np.load(f"{path}.predictions.npy"), expected), path.name


def test_sidecar_round_trip(tmp_path, light_model, images):
    path = checkpoints.save_checkpoint(light_model, tmp_path / "light_cnn_v1_02_0.625.h5", METADATA)
    model, metadata = checkpoints.load_checkpoint(path)

    assert np.array_equal(model.predict(images, verbose=0), light_model.predict(images, verbose=0))
    assert json.loads(checkpoints.sidecar_path(path).read_text())["val_metric"] == 0.625
    assert metadata["params"] == {"learning_rate": 1e-3, "epochs": 3}
    assert metadata["history"] == {"val_macro_f1": [0.5, 0.625]}
    for key in ("task", "class_names", "input_size", "arch", "split_file", "monitor"):
        assert metadata[key] == METADATA[key]
    assert metadata["created"][:4].isdigit() and metadata["keras_version"] and metadata["tensorflow_version"]
    assert "git_commit" in metadata
    assert metadata["checkpoint"] == str(path)


def test_save_never_overwrites_and_leaves_no_temporaries(tmp_path, light_model):
    path = tmp_path / "light_cnn_v1_01_0.500.h5"
    checkpoints.save_checkpoint(light_model, path, METADATA)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="overwrite"):
        checkpoints.save_checkpoint(light_model, path, METADATA)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.with_suffix(".json").name]


def test_failed_save_leaves_nothing_behind(tmp_path, light_model, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(light_model, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(light_model, tmp_path / "light_cnn_v1_01_0.500.h5", METADATA)
    assert list(tmp_path.iterdir()) == []


def test_metadata_must_match_the_model_output(tmp_path, light_model):
    with pytest.raises(CheckpointError, match="outputs 7 values"):
        checkpoints.save_checkpoint(
            light_model,
            tmp_path / "x.h5",
            {**METADATA, "task": "binary", "class_names": ["benign", "malignant"]},
        )
    assert list(tmp_path.iterdir()) == []


def test_broken_files_raise_clear_errors(tmp_path, light_model):
    good = checkpoints.save_checkpoint(light_model, tmp_path / "good.h5", METADATA)
    data = good.read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 2])
    (tmp_path / "photo.h5").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(500))
    with h5py.File(tmp_path / "table.h5", "w") as file:
        file["values"] = np.arange(10)

    with pytest.raises(CheckpointError, match="not found") as missing:
        checkpoints.load_checkpoint(tmp_path / "absent.h5")
    assert "absent.h5" in str(missing.value)
    with pytest.raises(CheckpointError, match="truncated") as truncated:
        checkpoints.load_checkpoint(tmp_path / "truncated.h5")
    assert isinstance(truncated.value.__cause__, OSError)
    with pytest.raises(CheckpointError, match="not an HDF5 file"):
        checkpoints.load_checkpoint(tmp_path / "photo.h5")
    with pytest.raises(CheckpointError, match="holds no Keras model"):
        checkpoints.load_checkpoint(tmp_path / "table.h5")
    light_model.save(tmp_path / "archive.keras")
    (tmp_path / "archive.h5").write_bytes((tmp_path / "archive.keras").read_bytes())
    with pytest.raises(
        CheckpointError, match=r"a Keras 3 \.keras archive \(a zip file\), not HDF5"
    ) as renamed:
        checkpoints.load_checkpoint(tmp_path / "archive.h5")
    assert "rename it to archive.keras" in str(renamed.value)
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file") as folder:
        checkpoints.load_checkpoint(tmp_path)
    assert (
        "name one of the model files in it: archive.h5, archive.keras, good.h5, photo.h5, table.h5 and 1 more"
        in str(folder.value)
    )
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".unfinished.h5").write_bytes(b"")  # a write in progress is not offered
    with pytest.raises(CheckpointError, match="it holds no .h5 or .keras file"):
        checkpoints.load_checkpoint(tmp_path / "empty")


def test_model_without_sidecar_is_refused_with_the_adopt_command(tmp_path, light_model):
    path = tmp_path / "from_elsewhere.h5"
    light_model.save(path)
    with pytest.raises(checkpoints.ForeignCheckpointError) as caught:
        checkpoints.load_checkpoint(path)
    message = str(caught.value)
    assert "no sidecar from_elsewhere.json" in message and "outputs 7 value(s) per image" in message
    assert f"skinlesion adopt {path} --task multiclass --classes" in message
    assert f"--input-size {SIZE[0]} {SIZE[1]}" in message
    assert checkpoints.load_model_file(path).output_shape == (None, 7)  # the model itself opens


def test_keras_file_with_sidecar_is_a_checkpoint(tmp_path, light_model):
    path = checkpoints.save_checkpoint(light_model, tmp_path / "model.h5", {"task": "multiclass"})
    native = tmp_path / "model.keras"
    light_model.save(native)
    checkpoints.sidecar_path(native).write_text(checkpoints.sidecar_path(path).read_text())
    model, metadata = checkpoints.load_checkpoint(native)
    assert metadata["class_names"] == list(config.CLASS_NAMES) and model.output_shape == (None, 7)
    (tmp_path / "renamed.keras").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a Keras 3 .keras archive"):
        checkpoints.load_checkpoint(tmp_path / "renamed.keras")


def _fake_checkpoint(folder: Path, name: str, **metadata) -> None:
    (folder / name).write_bytes(b"")
    if metadata:
        checkpoints.sidecar_path(folder / name).write_text(json.dumps(metadata))


def test_list_and_best_checkpoint_by_task(tmp_path):
    _fake_checkpoint(tmp_path, "a_v1_01_0.600.h5", task="multiclass", val_metric=0.6)
    _fake_checkpoint(tmp_path, "a_v1_02_0.700.h5", task="multiclass", val_metric=0.7)
    _fake_checkpoint(tmp_path, "b_v1_01_0.900.h5", task="binary", val_metric=0.9)
    _fake_checkpoint(tmp_path, "c_v1_01_0.990.h5")
    _fake_checkpoint(tmp_path, ".a_v1_03_0.800.h5.tmp.h5", task="multiclass", val_metric=0.8)

    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == [
        "a_v1_01_0.600.h5",
        "a_v1_02_0.700.h5",
        "b_v1_01_0.900.h5",
        "c_v1_01_0.990.h5",
    ]
    assert len(checkpoints.list_checkpoints(tmp_path, task="multiclass")) == 2
    assert checkpoints.best_checkpoint(tmp_path).name == "b_v1_01_0.900.h5"
    assert checkpoints.best_checkpoint(tmp_path, task="multiclass").name == "a_v1_02_0.700.h5"
    with pytest.raises(CheckpointError, match="No checkpoint for task 'regression'"):
        checkpoints.best_checkpoint(tmp_path, task="regression")
    with pytest.raises(CheckpointError, match="No checkpoint"):
        checkpoints.best_checkpoint(tmp_path / "empty")


def test_resolve_checkpoint_takes_the_path_or_the_best_for_the_task(tmp_path, monkeypatch):
    _fake_checkpoint(tmp_path, "a.h5", task="multiclass", val_metric=0.3)
    _fake_checkpoint(tmp_path, "b.h5", task="multiclass", val_metric=0.6)
    _fake_checkpoint(tmp_path, "c.h5", task="binary", val_metric=0.9)
    assert checkpoints.resolve_checkpoint("", "multiclass", tmp_path) == tmp_path / "b.h5"
    # relative to the project root, not to the notebooks/ folder a notebook runs in
    assert checkpoints.resolve_checkpoint("models/x.h5") == config.PROJECT_ROOT / "models" / "x.h5"
    assert checkpoints.resolve_checkpoint(tmp_path / "y.h5", "binary") == tmp_path / "y.h5"
    monkeypatch.setattr(config, "MODELS_DIR", tmp_path)
    assert checkpoints.resolve_checkpoint() == tmp_path / "c.h5"
    with pytest.raises(CheckpointError, match="No checkpoint for task 'regression'"):
        checkpoints.resolve_checkpoint("", "regression")


def test_resolve_checkpoint_of_a_folder_is_its_best_for_the_task(tmp_path):
    _fake_checkpoint(tmp_path, "a.h5", task="multiclass", val_metric=0.3)
    _fake_checkpoint(tmp_path, "b.h5", task="binary", val_metric=0.9)
    assert checkpoints.resolve_checkpoint(tmp_path, "multiclass") == tmp_path / "a.h5"
    assert checkpoints.resolve_checkpoint(tmp_path) == tmp_path / "b.h5"


def test_broken_sidecar_is_a_clear_error(tmp_path):
    (tmp_path / "a.h5").write_bytes(b"")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="a.json"):
        checkpoints.best_checkpoint(tmp_path)


def test_check_compatible():
    metadata = {"task": "multiclass", "class_names": list(config.CLASS_NAMES), "input_size": [150, 200]}
    checkpoints.check_compatible(metadata, class_names=config.CLASS_NAMES, input_size=(150, 200))
    with pytest.raises(CheckpointError, match="multiclass"):
        checkpoints.check_compatible(metadata, class_names=config.BINARY_CLASS_NAMES)
    with pytest.raises(CheckpointError, match="classes"):
        checkpoints.check_compatible(metadata, class_names=sorted(config.CLASS_NAMES, reverse=True))
    with pytest.raises(CheckpointError, match="size"):
        checkpoints.check_compatible(metadata, class_names=config.CLASS_NAMES, input_size=(224, 224))


def test_a_class_mismatch_shows_a_few_names_and_the_count():
    imagenet = {"task": "multiclass", "class_names": [f"class_{i}" for i in range(1000)]}
    with pytest.raises(CheckpointError) as error:
        checkpoints.check_compatible(imagenet, class_names=config.CLASS_NAMES)
    message = str(error.value)
    assert "['class_0', 'class_1', 'class_2', 'class_3', 'class_4', 'class_5', ..., 'class_999']" in message
    assert "(1000 classes)" in message and "class_500" not in message and len(message) < 500
    assert str(list(config.CLASS_NAMES)) in message  # seven names are shown whole


def test_a_sidecar_for_another_input_size_is_refused(tmp_path, light_model):
    path = checkpoints.save_checkpoint(light_model, tmp_path / "a.h5", METADATA)
    sidecar = checkpoints.sidecar_path(path)
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "input_size": [150, 200]}))
    with pytest.raises(CheckpointError, match="its sidecar a.json is another model's") as error:
        checkpoints.load_checkpoint(path)
    assert "[150, 200]" in str(error.value) and "64x64" in str(error.value) and "Fix:" in str(error.value)


def test_a_model_taking_any_size_loads_with_the_recorded_one(tmp_path):
    inputs = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(pooled))
    path = checkpoints.save_checkpoint(model, tmp_path / "any.h5", {**METADATA, "input_size": [32, 48]})
    assert checkpoints.load_checkpoint(path)[1]["input_size"] == [32, 48]


@pytest.mark.parametrize(
    "content",
    ["{}", "[]", '"model"', '{"task": "multiclass", "class_names": [], "input_size": "64x64"}'],
)
def test_a_sidecar_that_is_not_a_checkpoint_record_is_refused(tmp_path, light_model, content):
    path = tmp_path / "a.h5"
    light_model.save(path)
    checkpoints.sidecar_path(path).write_text(content)
    with pytest.raises(CheckpointError, match=r"a\.json\)? (is not|holds)") as error:
        checkpoints.load_checkpoint(path)
    assert "Fix:" in str(error.value)
    assert not checkpoints.is_project_checkpoint(path)  # so adopt takes it (a Keras 2 to_json() file, say)


def test_only_a_readable_record_makes_a_project_checkpoint(tmp_path, light_model):
    saved = checkpoints.save_checkpoint(light_model, tmp_path / "own.h5", METADATA)
    assert checkpoints.is_project_checkpoint(saved)
    checkpoints.sidecar_path(saved).write_text('{"class_name": "Sequential", "config": {}}')
    assert not checkpoints.is_project_checkpoint(saved)
