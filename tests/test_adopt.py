"""Foreign checkpoints: Keras 2 (tf.keras) .h5 files open as Keras 3 models with the probabilities the
TensorFlow that saved them gave, ``skinlesion adopt`` makes project checkpoints of them, and an un-adopted
file is refused with the facts and the command that fix it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from builders import save_untrained_checkpoint
from PIL import Image

from helpers.apps.cli import main
from helpers.core import config
from helpers.core.errors import CheckpointError
from helpers.evaluation.inference import predict_images
from helpers.models.adopt import adopt_checkpoint
from helpers.models.checkpoints import ForeignCheckpointError, load_checkpoint
from helpers.models.legacy import is_keras2_file, load_keras2_model

FIXTURES = {
    "seq_mobilenetv2_binary_96.h5": {"task": "binary", "preprocessing": "rescale"},
    "func_mobilenetv2_7class_kaggle_order_128.h5": {
        "task": "multiclass",
        "classes": ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"],
        "preprocessing": "mobilenet_v2",
    },
    "custom_sepconv_7class_64.h5": {"task": "multiclass", "preprocessing": "none"},
}
"""What each fixture's README says the original project declared (its class order and preprocessing)."""


@pytest.fixture(scope="module")
def fixtures_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "keras2_h5"


@pytest.fixture(scope="module")
def reference(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / "reference_predictions.json").read_text())


def reference_images(ham_root: Path, image_ids: list[str], size: list[int]) -> np.ndarray:
    """The fixtures' reference images: resized with PIL bilinear, RGB float 0-255 (as their README says)."""
    height, width = size
    folder = ham_root / "HAM10000_images_part_1"
    images = [
        Image.open(folder / f"{image_id}.jpg").convert("RGB").resize((width, height), Image.BILINEAR)
        for image_id in image_ids
    ]
    return np.stack([np.asarray(image, dtype=np.float32) for image in images])


def in_project_order(probabilities: np.ndarray, declared: dict) -> np.ndarray:
    """Reference probabilities as the project's classes in its order ([benign, malignant] for binary)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape[1] == 1:
        return np.column_stack([1 - probabilities[:, 0], probabilities[:, 0]])
    classes = declared.get("classes", list(config.CLASS_NAMES))
    return probabilities[:, [classes.index(name) for name in config.CLASS_NAMES]]


@pytest.mark.real_data
@pytest.mark.parametrize("name", FIXTURES)
def test_keras2_fixture_loads_with_tensorflow_215_probabilities(fixtures_dir, reference, ham_root, name):
    path = fixtures_dir / name
    assert is_keras2_file(path)
    facts = reference[name]
    images = reference_images(ham_root, facts["image_ids"], facts["input_size"])
    scale = {"rescale": 1 / 255.0, "mobilenet_v2": 1 / 127.5, "none": 1.0}[FIXTURES[name]["preprocessing"]]
    offset = -1.0 if FIXTURES[name]["preprocessing"] == "mobilenet_v2" else 0.0
    probabilities = load_keras2_model(path).predict(images * scale + offset, verbose=0)
    np.testing.assert_allclose(probabilities, facts["probabilities"], atol=1e-5)


@pytest.mark.real_data
@pytest.mark.parametrize("name", FIXTURES)
def test_unadopted_fixture_is_refused_with_the_adopt_command(fixtures_dir, reference, name):
    with pytest.raises(ForeignCheckpointError) as caught:
        load_checkpoint(fixtures_dir / name)
    message = str(caught.value)
    size = reference[name]["input_size"]
    assert (
        "skinlesion adopt" in message
        and "--preprocessing" in message
        and f"--input-size {size[0]}" in message
    )
    assert "Saved by Keras 2.15.0" in message and "no sidecar" in message
    assert ("--classes" in message) == (FIXTURES[name]["task"] == "multiclass")


@pytest.mark.real_data
@pytest.mark.parametrize("name", FIXTURES)
def test_adopted_fixture_reproduces_the_reference_probabilities(
    fixtures_dir, reference, ham_root, tmp_path, name
):
    declared, facts = FIXTURES[name], reference[name]
    original_bytes = (fixtures_dir / name).read_bytes()
    adoption = adopt_checkpoint(
        fixtures_dir / name, input_size=facts["input_size"], output=tmp_path / "adopted.h5", **declared
    )
    assert adoption.max_abs_diff < 1e-5 and adoption.parity_runtime.startswith("tf-keras")
    assert (fixtures_dir / name).read_bytes() == original_bytes  # the original is never modified
    model, metadata = load_checkpoint(adoption.checkpoint)
    assert metadata["class_names"] == list(config.TASK_CLASSES[declared["task"]])
    origin = metadata["adopted_from"]
    assert (
        origin["file"].endswith(name) and len(origin["sha256"]) == 64 and origin["keras_version"] == "2.15.0"
    )
    assert origin["preprocessing"] == declared["preprocessing"]
    images = reference_images(ham_root, facts["image_ids"], facts["input_size"])  # raw 0-255: inside now
    outputs = model.predict(images, verbose=0)
    outputs = np.column_stack([1 - outputs[:, 0], outputs[:, 0]]) if outputs.shape[1] == 1 else outputs
    np.testing.assert_allclose(outputs, in_project_order(facts["probabilities"], declared), atol=1e-5)


@pytest.fixture(scope="module")
def adopted_7class(fixtures_dir: Path, tmp_path_factory) -> Path:
    """The Kaggle-order MobileNetV2 fixture adopted into a temporary models folder."""
    name = "func_mobilenetv2_7class_kaggle_order_128.h5"
    output = tmp_path_factory.mktemp("adopted") / "kaggle_adopted.h5"
    return adopt_checkpoint(
        fixtures_dir / name, input_size=(128, 128), output=output, **FIXTURES[name]
    ).checkpoint


@pytest.mark.real_data
def test_predict_on_an_adopted_checkpoint(adopted_7class, ham_root):
    paths = sorted((ham_root / "HAM10000_images_part_1").glob("*.jpg"))[:5]
    table = predict_images(adopted_7class, paths, progress=False)
    assert (table["error"] == "").all() and set(table["predicted"]) <= set(config.CLASS_NAMES)
    assert np.allclose(table[[f"prob_{name}" for name in config.CLASS_NAMES]].sum(axis=1), 1.0)


@pytest.mark.real_data
def test_adopt_command_prints_parity_and_checks_declarations(fixtures_dir, tmp_path, capsys):
    original = fixtures_dir / "custom_sepconv_7class_64.h5"
    output = tmp_path / "custom.h5"
    argv = ["adopt", str(original), "--task", "multiclass", "--preprocessing", "none"]
    assert main([*argv, "--output", str(output)]) == 0  # --input-size read from the model itself
    printed = capsys.readouterr().out
    assert "Parity with the original run by tf-keras" in printed and "Class order assumed" in printed
    assert main([*argv, "--input-size", "96", "96", "--output", str(tmp_path / "b.h5")]) == 2
    assert "takes 64x64 images" in capsys.readouterr().err
    assert main([*argv, "--classes", "a", "b", "--output", str(tmp_path / "c.h5")]) == 2
    assert "are not the multiclass classes" in capsys.readouterr().err
    assert main(["adopt", str(original), "--task", "binary", "--preprocessing", "none"]) == 2
    assert "outputs 7 values per image" in capsys.readouterr().err
    assert main(["adopt", str(original), "--task", "multiclass"]) == 2
    assert "--preprocessing is needed" in capsys.readouterr().err
    assert not (tmp_path / "b.h5").exists() and not (tmp_path / "c.h5").exists()


def test_a_project_checkpoint_or_a_bad_output_is_refused_before_the_parity_check(
    fixtures_dir, tmp_path, monkeypatch
):
    """Adopting the project's own checkpoint (e.g. the release) is a mistake, and a bad --output must fail
    before the parity check, not after it."""
    own = save_untrained_checkpoint(tmp_path / "own.h5", input_size=(32, 40))
    with pytest.raises(CheckpointError, match="already a checkpoint of this project"):
        adopt_checkpoint(
            own, task="multiclass", preprocessing="none", input_size=(32, 40), output=tmp_path / "x.h5"
        )

    def no_parity(*args, **kwargs):
        raise AssertionError("the parity check ran before the output was checked")

    monkeypatch.setattr("helpers.models.adopt.original_outputs", no_parity)
    original = fixtures_dir / "custom_sepconv_7class_64.h5"
    options = {"task": "multiclass", "preprocessing": "none", "input_size": (64, 64)}
    with pytest.raises(CheckpointError, match=r"must end in \.h5"):
        adopt_checkpoint(original, output=tmp_path / "custom.keras", **options)
    with pytest.raises(CheckpointError, match="Refusing to overwrite"):
        adopt_checkpoint(original, output=own, **options)
    binary = {"task": "binary", "preprocessing": "rescale", "input_size": (96, 96)}
    with pytest.raises(CheckpointError, match="one sigmoid value.*cannot be reordered"):
        swapped = ("malignant", "benign")
        adopt_checkpoint(fixtures_dir / "seq_mobilenetv2_binary_96.h5", classes=swapped, **binary)


# ---------------------------------------------------------------- other Keras 2 layouts, made by tf-keras


def _tf_keras():
    return pytest.importorskip("tf_keras", reason="tf-keras (the legacy extra) makes the Keras 2 files")


def _perturb_batch_norm(model, rng: np.random.Generator) -> None:
    """Give every BatchNormalization non-trivial statistics, so a mix-up of its weights would show."""
    for layer in model.submodules:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    gamma + rng.normal(0, 0.1, gamma.shape),
                    beta + rng.normal(0, 0.1, beta.shape),
                    mean + rng.normal(0, 0.1, mean.shape),
                    variance + rng.uniform(0, 0.2, variance.shape),
                ]
            )


def _keras2_models():
    """Keras 2 classifiers of the usual kinds: (name, model, --preprocessing, task)."""
    k2 = _tf_keras()
    apps, layers = k2.applications, k2.layers

    def functional(backbone, units=7, activation="softmax"):
        pooled = layers.GlobalAveragePooling2D()(backbone.output)
        return k2.Model(
            backbone.input, layers.Dense(units, activation=activation)(layers.Dropout(0.2)(pooled))
        )

    densenet = k2.Sequential(
        [
            apps.DenseNet121(include_top=False, weights=None, input_shape=(64, 64, 3)),
            layers.GlobalAveragePooling2D(),
            layers.Dense(7, activation="softmax"),
        ]
    )
    custom = k2.Sequential(
        [
            layers.Input((48, 48, 3)),
            layers.Rescaling(1 / 255.0),
            layers.SeparableConv2D(8, 3, activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(),
            layers.Conv2D(8, 3, activation="relu"),
            layers.Dropout(0.3),
            layers.GlobalAveragePooling2D(),
            layers.Dense(7),
            layers.Softmax(),
        ]
    )
    return [
        ("sequential_nested_densenet121", densenet, "densenet", "multiclass"),
        (
            "functional_efficientnetb0",
            functional(apps.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))),
            "efficientnet",
            "multiclass",
        ),
        (
            "functional_resnet50_binary",
            functional(apps.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3)), 1, "sigmoid"),
            "resnet50",
            "binary",
        ),
        ("sequential_custom_cnn", custom, "none", "multiclass"),
    ]


@pytest.mark.slow
def test_keras2_layouts_adopt_with_parity(tmp_path):
    rng = np.random.default_rng(0)
    for name, model, preprocessing, task in _keras2_models():
        _perturb_batch_norm(model, rng)
        path = tmp_path / f"{name}.h5"
        model.save(path)
        assert is_keras2_file(path), name
        adoption = adopt_checkpoint(
            path,
            task=task,
            preprocessing=preprocessing,
            input_size=model.input_shape[1:3],
            classes=list(reversed(config.CLASS_NAMES)) if task == "multiclass" else None,
            output=tmp_path / f"{name}_adopted.h5",
        )
        assert adoption.max_abs_diff < 1e-5, (name, adoption.max_abs_diff)
        load_checkpoint(adoption.checkpoint)


@pytest.mark.slow
def test_a_lambda_layer_is_refused(tmp_path):
    k2 = _tf_keras()
    inputs = k2.Input((16, 16, 3))
    outputs = k2.layers.Dense(7, activation="softmax")(
        k2.layers.Flatten()(k2.layers.Lambda(lambda x: x / 255)(inputs))
    )
    path = tmp_path / "lambda.h5"
    k2.Model(inputs, outputs).save(path)
    with pytest.raises(CheckpointError, match="Lambda layer"):
        load_keras2_model(path)


# ---------------------------------------------------------------- an adopted checkpoint everywhere


@pytest.mark.real_data
def test_exports_of_an_adopted_checkpoint_match_it(adopted_7class, tmp_path, capsys):
    for fmt in ("onnx", "keras"):
        assert main(["export", "--model", str(adopted_7class), "--format", fmt, "--out", str(tmp_path)]) == 0
        printed = capsys.readouterr().out
        assert "Parity on 32 HAM10000 images" in printed
        assert float(printed.split("max |dp| ")[1].split(",")[0]) < 1e-4
    exported = tmp_path / f"{adopted_7class.stem}.keras"
    model, metadata = load_checkpoint(exported)  # a .keras file is a checkpoint like an .h5
    assert metadata["adopted_from"]["preprocessing"] == "mobilenet_v2"


def _external_subset(source: Path, folder: Path, count: int) -> Path:
    """The first ``count`` external test images (linked, not copied) with their ground-truth rows, in the
    ISIC 2018 layout: a quick stand-in for the 753-image set."""
    (folder / "images").mkdir(parents=True)
    lines = (source / "ISIC2018_Task3_Test_GroundTruth.csv").read_text().splitlines()
    for line in lines[1 : count + 1]:
        image_id = line.split(",")[0]
        (folder / "images" / f"{image_id}.jpg").symlink_to(source / "images" / f"{image_id}.jpg")
    (folder / "ISIC2018_Task3_Test_GroundTruth.csv").write_text("\n".join(lines[: count + 1]) + "\n")
    return folder


@pytest.mark.slow
@pytest.mark.real_data
def test_notebooks_04_and_05_on_an_adopted_checkpoint(adopted_7class, shared_dir, tmp_path, monkeypatch):
    from helpers.runs.runner import run_notebooks

    monkeypatch.setenv("SKINLESION_ROOT", str(tmp_path))  # the kernels write figures/ and Tracking.md here
    source = shared_dir / "data" / "ISIC2018_Task3_external_val"
    external = _external_subset(source, tmp_path / "external", 70)
    overrides = {
        "checkpoints": [str(adopted_7class)],
        "checkpoint": str(adopted_7class),
        "eval_set": "isic2018",
        "eval_path": str(external),
        "n_bootstrap": 20,
        "per_class": 1,
    }
    run_notebooks(
        ["04", "05"],
        config_file=config.CONFIGS_DIR / "ham10000.yaml",
        overrides=overrides,
        runs_dir=tmp_path / "runs",
    )
    figures = sorted(path.name for path in (tmp_path / "figures").glob("*.svg"))
    scope = f"ham10000_{adopted_7class.stem}"
    assert f"{scope}_04_isic2018_confusion_matrix.svg" in figures
    assert any(name.startswith(f"{scope}_05_explanations_true_") for name in figures)
    rows = (tmp_path / "Tracking.md").read_text(encoding="utf-8").splitlines()
    assert sum("origin=adopted from func_mobilenetv2_7class_kaggle_order_128.h5" in row for row in rows) == 2
