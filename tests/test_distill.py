"""Knowledge distillation: the soft targets, the loss and metric on them, the pipeline that feeds them, and
tiny teachers distilled into tiny students on synthetic data (targets reach fit, class weights follow the
labels, a teacher that saw held-out images or predicts other classes is refused)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from builders import tiny_train_config

from helpers.core import config
from helpers.core.errors import CheckpointError, SkinLesionError
from helpers.data.demo import make_demo_dataset
from helpers.data.ham10000 import load_ham10000
from helpers.data.pipeline import make_dataset
from helpers.data.source import DataSource
from helpers.data.splits import make_lesion_split, save_split
from helpers.models.predict import predict_probabilities
from helpers.training.callbacks import BalancedAccuracy
from helpers.training.distill import distillation_targets
from helpers.training.losses import task_loss
from helpers.training.run import TrainingRun, train
from helpers.training.settings import TrainConfig, config_from_notebook

SIZE = (48, 64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def frame(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("demo") / "HAM10000"
    make_demo_dataset(root, lesions_per_class=3, images_per_lesion=(1, 2), image_size=(64, 64))
    return make_lesion_split(load_ham10000(root), val_fraction=0.3, test_fraction=0.1)


@pytest.fixture(scope="module")
def split_file(frame, tmp_path_factory) -> Path:
    return save_split(frame, tmp_path_factory.mktemp("splits") / "demo_split.csv")


@pytest.fixture(scope="module")
def teacher(frame, split_file, tmp_path_factory) -> Path:
    """A train-only light_cnn at its own input size (64x64; the students take 48x64)."""
    folder = tmp_path_factory.mktemp("teacher")
    return train(tiny_config(folder, input_size=(64, 64)), frame, split_file=split_file).checkpoint_path


def tiny_config(folder, **overrides) -> TrainConfig:
    """One epoch, label-smoothed as the recipe, at the students' input size."""
    return tiny_train_config(folder, **{"input_size": SIZE, "epochs": 1, "label_smoothing": 0.1, **overrides})


def test_targets_mix_the_label_and_the_teacher_and_keep_the_label_on_top(rng) -> None:
    labels = np.array([0, 3, 6, 6])
    teacher = rng.dirichlet(np.ones(7), size=4)
    teacher[3] = np.eye(7)[2]  # a certain, wrong teacher still leaves the label on top
    targets = distillation_targets(labels, teacher, 0.45)
    assert targets.dtype == np.float32 and targets.shape == (4, 7)
    np.testing.assert_allclose(targets.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(targets, 0.55 * np.eye(7)[labels] + 0.45 * teacher, rtol=1e-6)
    assert list(targets.argmax(axis=1)) == list(labels)


@pytest.mark.parametrize("weight", [0.0, 0.5, 0.6, -0.1])
def test_weights_that_could_tie_with_or_outvote_the_label_are_refused(weight: float) -> None:
    with pytest.raises(ValueError, match="distill_weight must be in"):
        distillation_targets(np.array([0]), np.full((1, 7), 1 / 7), weight)
    with pytest.raises(SkinLesionError, match="distill_weight must be in"):
        TrainConfig(distill_weight=weight)


def test_teacher_probabilities_must_match_the_labels() -> None:
    with pytest.raises(ValueError, match="teacher probabilities"):
        distillation_targets(np.array([0, 1]), np.full((3, 7), 1 / 7), 0.4)
    with pytest.raises(ValueError, match="teacher probabilities"):
        distillation_targets(np.array([0]), np.full((1, 7), np.nan), 0.4)


def test_distillation_is_for_the_multiclass_task() -> None:
    with pytest.raises(SkinLesionError, match="distill_from needs task 'multiclass'"):
        TrainConfig(task="binary", distill_from="teacher.h5")


def test_the_loss_takes_soft_targets_as_they_are_and_integer_labels_as_before(rng) -> None:
    targets = rng.dirichlet(np.ones(7), size=5).astype(np.float32)
    predicted = rng.dirichlet(np.ones(7), size=5).astype(np.float32)
    labels = np.array([0, 1, 2, 5, 6])
    loss = task_loss("multiclass", 0.1, soft_targets=True)
    expected_soft = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(targets, predicted)
    expected_hard = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(7)[labels], predicted)
    assert float(loss(targets, predicted)) == pytest.approx(float(expected_soft), rel=1e-6)
    assert float(loss(labels, predicted)) == pytest.approx(float(expected_hard), rel=1e-6)
    unsmoothed = task_loss("multiclass", 0.0, soft_targets=True)
    assert float(unsmoothed(targets, predicted)) == pytest.approx(
        float(keras.losses.categorical_crossentropy(targets, predicted).numpy().mean()), rel=1e-6
    )


def test_the_training_metric_counts_a_soft_target_as_its_label(rng) -> None:
    labels = np.array([0, 1, 2, 2, 6])
    predicted = rng.dirichlet(np.ones(7), size=5).astype(np.float32)
    soft, hard = BalancedAccuracy(7), BalancedAccuracy(7)
    soft.update_state(distillation_targets(labels, rng.dirichlet(np.ones(7), size=5), 0.4), predicted)
    hard.update_state(labels, predicted)
    assert float(soft.result()) == pytest.approx(float(hard.result()))


def test_the_pipeline_yields_the_targets_in_frame_order(frame: pd.DataFrame, rng) -> None:
    train_frame = frame[frame["partition"] == "train"].reset_index(drop=True)
    targets = rng.dirichlet(np.ones(7), size=len(train_frame)).astype(np.float32)
    batches = make_dataset(train_frame, image_size=SIZE, batch_size=4, targets=targets)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in batches]), targets)
    with pytest.raises(ValueError, match="targets must be"):
        make_dataset(train_frame, image_size=SIZE, targets=targets[:-1])


def test_a_teacher_path_in_a_config_is_expanded_and_read_from_the_project_root(monkeypatch) -> None:
    monkeypatch.setenv("TEACHERS", "/teachers")
    source = DataSource(root=Path("demo"), is_demo=True, description="test")
    settings = config_from_notebook({"distill_from": "$TEACHERS/ens.h5"}, label="demo", source=source)
    assert settings.distill_from == "/teachers/ens.h5"
    assert config.project_path("models/ens.h5") == config.PROJECT_ROOT / "models" / "ens.h5"


@pytest.mark.slow
def test_a_student_learns_from_the_teachers_predictions_on_its_training_images(
    frame, split_file, teacher, tmp_path, monkeypatch
) -> None:
    config_ = tiny_config(tmp_path, distill_from=str(teacher), distill_weight=0.4, fine_tune_epochs=1)
    run = TrainingRun(config_, frame, split_file=split_file)
    train_frame = run.frames["train"]
    teacher_model = keras.models.load_model(teacher, compile=False)
    expected = 0.6 * np.eye(7)[train_frame["label"]] + 0.4 * predict_probabilities(
        teacher_model, train_frame, progress=False
    )
    np.testing.assert_allclose(run.targets, expected, atol=1e-5)  # at the teacher's own input size
    fits, fit = [], keras.Model.fit
    monkeypatch.setattr(
        keras.Model, "fit", lambda model, data, **kw: fits.append((data, kw)) or fit(model, data, **kw)
    )
    run.head_phase()
    result = run.finish()
    ((data, arguments),) = fits
    fed = np.concatenate([y.numpy() for _, y in data])
    np.testing.assert_allclose(np.sort(fed, axis=0), np.sort(run.targets, axis=0))  # soft targets, not labels
    assert arguments["class_weight"] == run.class_weight  # Keras weighs each by its top class: the label
    assert result.checkpoint_path.is_file() and np.isfinite(result.history["loss"]).all()


@pytest.mark.slow
def test_a_distilled_backbone_model_trains_its_head_on_images_not_cached_features(
    frame, split_file, teacher, tmp_path
) -> None:
    settings = tiny_config(
        tmp_path, arch="mobilenetv3small", input_size=(64, 64), distill_from=str(teacher), cache_features=True
    )
    train(settings, frame, split_file=split_file)
    assert not (tmp_path / "cache").exists()  # the cache would hold labels, not the teacher's targets


@pytest.mark.slow
def test_a_teacher_of_another_task_is_refused_naming_it(frame, split_file, tmp_path) -> None:
    binary = tiny_config(tmp_path / "teacher", task="binary", label_smoothing=0.0)
    teacher = train(binary, frame, split_file=split_file).checkpoint_path
    student = tiny_config(tmp_path / "student", distill_from=str(teacher))
    with pytest.raises(CheckpointError, match=f"teacher {teacher} was trained for task 'binary'"):
        TrainingRun(student, frame, split_file=split_file)


@pytest.mark.slow
def test_a_teacher_that_saw_the_held_out_images_is_refused(frame, split_file, teacher, tmp_path) -> None:
    everything = ["train", "val", "test"]
    all_data = tiny_config(tmp_path / "teacher", train_partitions=everything)
    seen = train(all_data, frame, split_file=split_file).checkpoint_path
    student = tiny_config(tmp_path / "student", distill_from=str(seen))
    with pytest.raises(
        CheckpointError, match=r"(?s)trained on the \['train', 'val', 'test'\].*Fix: distil from"
    ):
        TrainingRun(student, frame, split_file=split_file)
    train_only = tiny_config(tmp_path / "student2", distill_from=str(teacher))
    for other_split in (None, tmp_path / "other.csv"):  # unrecorded, or another split
        with pytest.raises(CheckpointError, match="holds the others out"):
            TrainingRun(train_only, frame, split_file=other_split)
    copy = save_split(frame, tmp_path / "copy_of_the_split.csv")  # the same split in another clone
    assert TrainingRun(train_only, frame, split_file=copy).targets.shape == (
        len(frame[frame.partition == "train"]),
        7,
    )
    released = tiny_config(tmp_path / "release", distill_from=str(seen), train_partitions=everything)
    assert TrainingRun(released, frame, split_file=split_file).targets.shape == (len(frame), 7)


@pytest.mark.slow
def test_a_resumed_run_keeps_its_teacher(frame, split_file, teacher, tmp_path) -> None:
    settings = tiny_config(tmp_path, distill_from=str(teacher), epochs=2)
    TrainingRun(settings, frame, split_file=split_file).head_phase()  # interrupted before finish
    changed = tiny_config(tmp_path, distill_from=str(teacher), distill_weight=0.2, epochs=2, resume=True)
    with pytest.raises(SkinLesionError, match="distill_weight"):
        TrainingRun(changed, frame, split_file=split_file)
