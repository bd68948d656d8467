"""Checkpoint evaluation on a tiny synthetic HAM10000 copy: evaluation sets, metrics, operating point."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import (
    flip_sensitive_model,
    save_untrained_checkpoint,
    split_demo_data,
    write_isic2018_test_set,
    write_noise_image,
)

from helpers.core import config
from helpers.core.errors import CheckpointError, DataError
from helpers.data.ham10000 import load_ham10000
from helpers.data.isic2018 import DX_COLUMNS
from helpers.data.pipeline import load_image_array
from helpers.data.splits import make_lesion_split, save_split
from helpers.evaluation.evaluate import (
    evaluate_checkpoint,
    load_for_evaluation,
    paired_difference,
    prediction_table,
    recall_by_confirmation,
)
from helpers.evaluation.inference import predict_images
from helpers.evaluation.metrics import balanced_accuracy, bootstrap_ci, malignant_probability
from helpers.evaluation.operating_point import load_operating_point, operating_point_path
from helpers.evaluation.sets import checkpoint_partitions, evaluation_set, partition
from helpers.models.build import build_model
from helpers.models.checkpoints import save_checkpoint
from helpers.models.predict import predict_probabilities

IMAGE_SIZE = (48, 64)
MODEL_SIZE = (32, 40)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A synthetic HAM10000 copy, 4 lesions per class, with a saved split (1/2 train, 1/4 val, 1/4 test)."""
    folder = tmp_path_factory.mktemp("tiny")
    root, split, split_file = split_demo_data(
        folder / "demo",
        folder / "split.csv",
        demo_options={"lesions_per_class": 4, "image_size": IMAGE_SIZE},
        val_fraction=0.25,
        test_fraction=0.25,
        seed=0,
    )
    return {"root": root, "split": split, "split_file": split_file, "folder": folder}


def _checkpoint(folder: Path, name: str, **options) -> Path:
    return save_untrained_checkpoint(folder / f"{name}.h5", input_size=MODEL_SIZE, **options)


@pytest.fixture(scope="module")
def multiclass_ckpt(tiny) -> Path:
    return _checkpoint(tiny["folder"], "light_cnn_v1_01_0.400", split_file=tiny["split_file"], val_metric=0.4)


def test_internal_evaluation_end_to_end(tiny, multiclass_ckpt):
    [(model, metadata)] = load_for_evaluation([multiclass_ckpt])
    chosen = evaluation_set("internal", metadata=metadata, data_root=tiny["root"])
    split = tiny["split"]
    assert set(chosen.test["image_id"]) == set(split.loc[split["partition"] == "test", "image_id"])
    assert set(chosen.val["image_id"]) == set(split.loc[split["partition"] == "val", "image_id"])
    assert chosen.synthetic

    result = evaluate_checkpoint(model, metadata, chosen, n_bootstrap=30, target_sensitivity=0.9)
    n_test = len(chosen.test)
    assert result["probs"].shape == (n_test, 7)
    np.testing.assert_allclose(result["probs"].sum(axis=1), 1, atol=1e-6)
    assert result["multiclass"]["confusion_matrix"].sum() == n_test
    summary = result["summary"]
    for name in ("balanced_accuracy", "macro_auc", "roc_auc"):
        point, low, high = summary[name]
        assert low <= point <= high or np.isnan(point)
    assert summary["images"] == n_test and summary["lesions"] == chosen.test["lesion_id"].nunique()
    assert result["operating_point"]["val_metrics"]["sensitivity"] >= 0.9

    saved = load_operating_point(operating_point_path(multiclass_ckpt))
    assert saved["threshold"] == pytest.approx(result["operating_point"]["threshold"])
    assert saved["temperature"] == pytest.approx(result["calibration"]["temperature"])
    assert saved["class_bias"] == pytest.approx(result["operating_point"]["class_bias"])
    val_metrics = result["operating_point"]["val_metrics"]
    assert val_metrics["balanced_accuracy_after_bias"] >= val_metrics["balanced_accuracy_before_bias"]
    table = prediction_table(result)
    assert list(table["true"]) == list(chosen.test["dx"]) and table["confidence"].between(0, 1).all()


def test_predict_agrees_with_evaluation_through_the_saved_operating_point(tiny):
    path = tiny["folder"] / "flip_sensitive.h5"
    sidecar = {"task": "multiclass", "class_names": list(config.CLASS_NAMES), "input_size": list(IMAGE_SIZE)}
    sidecar["split_file"] = str(tiny["split_file"])
    save_checkpoint(flip_sensitive_model(IMAGE_SIZE), path, sidecar)
    [(model, metadata)] = load_for_evaluation([path])
    chosen = evaluation_set("internal", metadata=metadata, data_root=tiny["root"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an untrained model: the temperature may sit at a search bound
        result = evaluate_checkpoint(model, metadata, chosen, n_bootstrap=5)
    raw = predict_probabilities(model, chosen.test, input_size=IMAGE_SIZE, progress=False)
    predicted = predict_images(path, chosen.test["image_path"].tolist(), progress=False)
    np.testing.assert_allclose(predicted["p_malignant"], result["p_malignant"], atol=1e-5)
    assert not np.allclose(predicted["p_malignant"], malignant_probability(raw), atol=1e-3)
    decision = np.where(
        result["p_malignant"] >= result["operating_point"]["threshold"], "malignant", "benign"
    )
    assert predicted["decision"].tolist() == decision.tolist()


def test_binary_checkpoint_reads_p_malignant_from_its_sigmoid(tiny):
    path = _checkpoint(tiny["folder"], "binary", task="binary", split_file=tiny["split_file"])
    [(model, metadata)] = load_for_evaluation([path])
    chosen = evaluation_set("internal", metadata=metadata, data_root=tiny["root"])
    probs = predict_probabilities(model, chosen.test, input_size=MODEL_SIZE, progress=False)
    sigmoid = model.predict(
        load_image_array(chosen.test["image_path"], MODEL_SIZE, progress=False), verbose=0
    )
    np.testing.assert_allclose(probs[:, 1], sigmoid[:, 0], atol=1e-5)
    result = evaluate_checkpoint(model, metadata, chosen, n_bootstrap=5, save=False)
    assert result["multiclass"] is None and len(result["summary"]["balanced_accuracy"]) == 3
    assert not operating_point_path(path).exists()


def test_class_set_or_task_mismatch_is_a_clear_error(tiny, multiclass_ckpt):
    model = build_model("light_cnn", num_classes=5, input_size=MODEL_SIZE, weights=None)
    five = {"task": "multiclass", "class_names": list("abcde"), "input_size": list(MODEL_SIZE)}
    path = save_checkpoint(model, tiny["folder"] / "five.h5", {**five, "split_file": str(tiny["split_file"])})
    with pytest.raises(CheckpointError, match="classes"):
        load_for_evaluation([path])
    with pytest.raises(CheckpointError, match="classes"):
        evaluation_set("internal", metadata={**five, "checkpoint": str(path)}, data_root=tiny["root"])
    binary = _checkpoint(tiny["folder"], "binary_mix", task="binary")
    with pytest.raises(CheckpointError, match="one task"):
        load_for_evaluation([multiclass_ckpt, binary])


def test_internal_set_needs_the_split_file(tiny):
    path = _checkpoint(tiny["folder"], "no_split")
    [(_, metadata)] = load_for_evaluation([path])
    with pytest.raises(CheckpointError, match="split_file"):
        evaluation_set("internal", metadata=metadata, data_root=tiny["root"])


def test_checkpoint_partitions_follow_the_recorded_split(tiny):
    frame = load_ham10000(tiny["root"])
    test = partition(checkpoint_partitions(frame, {"split_file": str(tiny["split_file"])}), "test")
    split = tiny["split"]
    assert set(test["image_id"]) == set(split.loc[split["partition"] == "test", "image_id"])
    assert (test["partition"] == "test").all()
    with pytest.raises(CheckpointError, match="split_file"):
        checkpoint_partitions(frame, {"checkpoint": "x.h5", "split_file": None})
    with pytest.raises(DataError, match="no 'val' images"):
        partition(frame.assign(partition="train"), "val")


@pytest.fixture
def isic_dir(tmp_path: Path) -> Path:
    """Eight images in the ISIC 2018 Task 3 test layout: one per class, a second melanoma."""
    return write_isic2018_test_set(
        tmp_path / "ISIC2018_Task3_Test_Input", [*range(len(DX_COLUMNS)), 0], size=(60, 80)
    )


def test_isic2018_layout_is_evaluated_with_the_internal_validation_set(tiny, multiclass_ckpt, isic_dir):
    [(model, metadata)] = load_for_evaluation([multiclass_ckpt])
    chosen = evaluation_set("isic2018", metadata=metadata, data_root=tiny["root"], path=isic_dir)
    assert chosen.test["dx"].tolist() == [*DX_COLUMNS.values(), "mel"]
    assert len(chosen.val) == (tiny["split"]["partition"] == "val").sum()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bootstrap resamples of 8 images often lack a class
        result = evaluate_checkpoint(model, metadata, chosen, n_bootstrap=10, save=False)
    assert result["multiclass"]["confusion_matrix"].sum() == 8


def test_a_checkpoint_trained_on_all_partitions_needs_no_split_for_external_sets(multiclass_ckpt, isic_dir):
    [(_, metadata)] = load_for_evaluation([multiclass_ckpt])
    released = {**metadata, "trained_on": ["train", "val", "test"], "split_file": "/elsewhere/split.csv"}
    chosen = evaluation_set("isic2018", metadata=released, data_root="/no/ham10000", path=isic_dir)
    assert chosen.val is None and len(chosen.test) == 8


def test_a_split_file_from_another_clone_is_found_in_data_splits(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SPLITS_DIR", Path(tiny["split_file"]).parent)
    elsewhere = f"/another/clone/data/splits/{Path(tiny['split_file']).name}"
    metadata = {"checkpoint": "x.h5", "split_file": elsewhere}
    frame = checkpoint_partitions(load_ham10000(tiny["root"], verify_images=False), metadata)
    assert (frame["partition"] == "test").sum() == (tiny["split"]["partition"] == "test").sum()


def test_folder_set_is_scored_malignant_vs_benign(tiny, multiclass_ckpt, tmp_path):
    for name in ("benign", "malignant"):
        for index in range(3):
            write_noise_image(tmp_path / "set" / name / f"{index}.jpg", index, (50, 50))
    [(model, metadata)] = load_for_evaluation([multiclass_ckpt])
    with pytest.warns(UserWarning, match="Cannot check this folder set"):
        chosen = evaluation_set("folder", metadata=metadata, data_root=tiny["root"], path=tmp_path / "set")
    result = evaluate_checkpoint(model, metadata, chosen, n_bootstrap=10, save=False)
    assert result["multiclass"] is None and 0 <= result["summary"]["roc_auc"][0] <= 1
    assert set(prediction_table(result)["true"]) == {"benign", "malignant"}


@pytest.mark.real_data
def test_real_folder_set_drops_lesions_the_model_trained_or_validated_on(ham_root, binary_root, tmp_path):
    split = make_lesion_split(load_ham10000(ham_root, verify_images=False), seed=42)
    split_file = save_split(split, tmp_path / "split.csv")
    metadata = {"task": "multiclass", "class_names": list(config.CLASS_NAMES), "input_size": [150, 200]}
    metadata.update(split_file=str(split_file), checkpoint="real.h5")
    chosen = evaluation_set("folder", metadata=metadata, data_root=ham_root, path=binary_root)
    seen = set(split.loc[split["partition"] != "test", "lesion_id"])
    assert not set(chosen.test["ham_lesion_id"].dropna()) & seen
    assert set(chosen.test["ham_lesion_id"].dropna()) <= set(
        split.loc[split["partition"] == "test", "lesion_id"]
    )
    assert len(chosen.test) > 1000 and chosen.test["malignant"].nunique() == 2  # 3,297 images before
    assert len(chosen.val) == (split["partition"] == "val").sum() and not chosen.synthetic


def test_paired_difference_is_exact_at_the_point_and_tighter_than_either_interval() -> None:
    """Model A is right on 60 of 100 lesions' images, B on the same 60 minus 6: A - B = +0.06 balanced
    accuracy with a paired interval inside (0, ...) although their own intervals overlap."""
    rng = np.random.default_rng(0)
    n = 140
    frame = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "lesion_id": [f"l{i}" for i in range(n)],
            "dx": [config.CLASS_NAMES[i % 7] for i in range(n)],
        }
    )
    frame["malignant"] = frame["dx"].isin(config.MALIGNANT_CLASSES).astype(int)
    labels = frame["label"] = np.arange(n) % 7
    right = rng.uniform(size=n) < 0.6
    worse = right & (rng.uniform(size=n) < 0.85)

    def evaluation(correct: np.ndarray) -> dict:
        predicted = np.where(correct, labels, (labels + 1) % 7)
        probs = np.full((n, 7), 0.05)
        probs[np.arange(n), predicted] = 0.7
        return {
            "frame": frame,
            "class_names": list(config.CLASS_NAMES),
            "probs": probs,
            "p_malignant": malignant_probability(probs),
        }

    a, b = evaluation(right), evaluation(worse)
    difference = paired_difference(a, b, n_bootstrap=300)
    point, low, high = difference["balanced_accuracy"]
    expected = balanced_accuracy(labels, a["probs"]) - balanced_accuracy(labels, b["probs"])
    assert point == pytest.approx(expected) and 0 < low <= point <= high
    own = bootstrap_ci(balanced_accuracy, labels, a["probs"], n_boot=300)
    assert high - low < own.high - own.low
    assert set(difference) == {"balanced_accuracy", "roc_auc"}
    with pytest.raises(DataError, match="same images"):
        paired_difference(a, {**b, "frame": frame.iloc[::-1]})


def test_recall_by_confirmation_splits_each_class_by_dx_type() -> None:
    frame = pd.DataFrame(
        {
            "dx": ["nv", "nv", "nv", "nv", "mel", "mel"],
            "dx_type": ["follow_up", "follow_up", "histo", "histo", "histo", ""],
        }
    )
    frame["image_id"] = [f"ISIC_{index}" for index in range(len(frame))]
    frame["image_path"] = frame["image_id"] + ".jpg"
    predicted = ["nv", "nv", "mel", "nv", "mel", "nv"]
    probs = np.eye(len(config.CLASS_NAMES))[[config.CLASS_NAMES.index(name) for name in predicted]]
    result = {"frame": frame, "probs": probs, "class_names": config.CLASS_NAMES, "multiclass": {}}
    table = recall_by_confirmation(result)
    assert table.loc[("nv", "follow_up")].tolist() == [1.0, 2]
    assert table.loc[("nv", "histo")].tolist() == [0.5, 2]
    assert table.loc[("mel", "histo")].tolist() == [1.0, 1]  # no dx_type (ISIC 2018 images): not a group
    assert len(table) == 3
    assert recall_by_confirmation({**result, "frame": frame.drop(columns="dx_type")}).empty
    assert recall_by_confirmation({**result, "multiclass": None}).empty
