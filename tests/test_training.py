"""Training runs on tiny synthetic data: config parsing, the best checkpoint and its sidecar, the exact
validation metric, class weights, two-phase fine-tuning, resuming after an interruption, reproducibility."""

from __future__ import annotations

import os
import re
import signal
from dataclasses import replace

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from builders import tiny_train_config as tiny_config
from sklearn.metrics import balanced_accuracy_score

from helpers.core.errors import CheckpointError, DataError, SkinLesionError
from helpers.data.demo import make_demo_dataset
from helpers.data.ham10000 import load_ham10000
from helpers.data.pipeline import load_image_array
from helpers.data.splits import make_lesion_split
from helpers.models.build import backbone_layers
from helpers.models.checkpoints import load_checkpoint, read_metadata
from helpers.training.losses import SmoothedSparseCategoricalCrossentropy, class_weights
from helpers.training.run import TimeBudget, TrainingStopped, set_seed, train, training_frames
from helpers.training.settings import TrainConfig

SIZE = (64, 64)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def frame(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("demo") / "HAM10000"
    make_demo_dataset(root, lesions_per_class=4, images_per_lesion=(1, 2), image_size=SIZE)
    return make_lesion_split(load_ham10000(root), val_fraction=0.3, test_fraction=0.1)


class ValidationProbe(keras.callbacks.Callback):
    """After each epoch, recompute balanced accuracy from the model's own predictions on the val images."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        super().__init__()
        self.images, self.labels, self.pairs = images, labels, []

    def on_epoch_end(self, epoch, logs=None):
        predicted = np.argmax(self.model(self.images, training=False), axis=-1)
        self.pairs.append((logs["val_balanced_accuracy"], balanced_accuracy_score(self.labels, predicted)))


@pytest.fixture(scope="module")
def baseline(frame, tmp_path_factory):
    """One light_cnn run (2 epochs), with the validation probe and the arguments given to fit recorded."""
    folder = tmp_path_factory.mktemp("baseline")
    config = tiny_config(folder)
    val = training_frames(frame, config)["val"]
    images = load_image_array(val["image_path"], SIZE, progress=False).astype(np.float32)
    probe = ValidationProbe(images, val["label"].to_numpy())
    fit_calls, fit = [], keras.Model.fit
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras.Model, "fit", lambda model, *a, **k: fit_calls.append(k) or fit(model, *a, **k))
        result = train(config, frame, split_file=None, data_description="demo data", callbacks=[probe])
    return config, result, probe, fit_calls


def test_config_from_params_rejects_unknown_keys_clearly() -> None:
    config = TrainConfig.from_params({"arch": "light_cnn", "weights": None, "input_size": [64, 64]})
    assert config.input_size == (64, 64) and config.monitored == "val_balanced_accuracy"
    expected = r"'achr' \(did you mean 'arch'\?\), 'zzz'\nValid parameters: arch"
    with pytest.raises(SkinLesionError, match=expected):
        TrainConfig.from_params({"achr": "light_cnn", "zzz": 1})


def test_config_reads_numbers_written_as_text() -> None:
    config = TrainConfig.from_params(
        {"lr": "1e-3", "epochs": "3", "max_images": "100", "input_size": ["32", 48]}
    )
    assert (config.lr, config.epochs, config.max_images, config.input_size) == (1e-3, 3, 100, (32, 48))
    with pytest.raises(SkinLesionError, match="not a number"):
        TrainConfig(lr="fast")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"task": "ternary"}, "task 'ternary'"),
        ({"arch": "resnet9000"}, "arch 'resnet9000'"),
        ({"lr": 0}, "lr and fine_tune_lr must be > 0"),
        ({"task": "binary", "monitor_metric": "balanced_accuracy"}, "monitor_metric for 'binary'"),
        ({"balanced_sampling": True}, "set class_weighting='none'"),
        ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
        ({"augment_mode": "heavy"}, "augment_mode must be one of"),
        ({"time_budget_s": 0}, "time_budget_s must be None or > 0"),
        ({"ema_momentum": 1.0}, "ema_momentum must be None or in (0, 1)"),
    ],
)
def test_config_rejects_bad_values(params, message) -> None:
    with pytest.raises(SkinLesionError, match=re.escape(message)):
        TrainConfig(**params)


def test_training_frames_need_partitions_and_cap_images(frame, tmp_path) -> None:
    with pytest.raises(DataError, match="no 'partition' column"):
        training_frames(frame.drop(columns="partition"), tiny_config(tmp_path))
    with pytest.raises(DataError, match="no 'val' images"):
        training_frames(frame[frame["partition"] == "train"], tiny_config(tmp_path))
    capped = training_frames(frame, tiny_config(tmp_path, max_images=10))
    assert len(capped["train"]) <= 11 and set(capped["train"]["partition"]) == {"train"}


def test_label_smoothing_loss_equals_categorical_crossentropy_on_one_hot() -> None:
    labels = np.array([0, 3, 6])
    probabilities = np.random.default_rng(0).dirichlet(np.ones(7), size=3).astype(np.float32)
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(7)[labels], probabilities)
    actual = SmoothedSparseCategoricalCrossentropy(7, 0.1)(labels, probabilities)
    assert float(actual) == pytest.approx(float(expected), rel=1e-6)


def test_best_checkpoint_name_sidecar_and_history(baseline) -> None:
    config, result, _, _ = baseline
    history = result.history
    best_epoch = int(np.argmax(history["val_balanced_accuracy"])) + 1
    assert result.checkpoint_path.name == f"light_cnn_v1_{best_epoch:02d}_{result.best_metric:.3f}.h5"
    assert [path.name for path in result.checkpoint_path.parent.glob("*.h5")] == [result.checkpoint_path.name]
    metadata = read_metadata(result.checkpoint_path)
    assert metadata["params"] == config.to_params()
    assert (metadata["data_description"], metadata["split_file"]) == ("demo data", None)
    assert metadata["version"] == result.version == 1
    assert metadata["monitor"] == "val_balanced_accuracy" and metadata["epoch"] == best_epoch
    assert metadata["history"]["epoch"] == list(range(1, best_epoch + 1))
    assert history["epoch"] == [1, 2] and history["phase"] == [1, 1]
    assert {"loss", "val_loss", "balanced_accuracy", "learning_rate"} <= set(history)
    csv = pd.read_csv(config.path("runs") / config.name / "history.csv")
    assert list(csv["val_balanced_accuracy"]) == pytest.approx(history["val_balanced_accuracy"])
    assert result.images_per_s > 0 and result.wall_time_s > 0
    assert not (config.path("models") / ".resume" / config.name).exists()


def test_returned_model_is_the_checkpointed_best(baseline, frame) -> None:
    _, result, probe, _ = baseline
    loaded, _ = load_checkpoint(result.checkpoint_path)
    expected = result.model(probe.images, training=False)
    np.testing.assert_allclose(loaded(probe.images, training=False), expected)


def test_monitored_metric_is_sklearn_on_the_whole_validation_set(baseline) -> None:
    _, result, probe, _ = baseline
    assert len(probe.pairs) == 2
    for logged, recomputed in probe.pairs:
        assert logged == pytest.approx(recomputed, abs=1e-12)
    assert result.history["val_balanced_accuracy"] == [logged for logged, _ in probe.pairs]


def test_class_weights_are_applied(baseline, frame) -> None:
    config, _, _, fit_calls = baseline
    train_labels = training_frames(frame, config)["train"]["label"]
    expected = class_weights(train_labels, "balanced", num_classes=7)
    assert [call["class_weight"] for call in fit_calls] == [expected]
    assert len(set(expected.values())) > 1


def test_same_seed_gives_the_same_run(frame, tmp_path) -> None:
    sampled = {"balanced_sampling": True, "class_weighting": "none", "label_smoothing": 0.1}
    first, again = (
        train(tiny_config(tmp_path / name, epochs=1, **sampled), frame) for name in ("first", "again")
    )
    assert again.history["val_balanced_accuracy"] == first.history["val_balanced_accuracy"]
    np.testing.assert_allclose(again.history["loss"], first.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(again.history["val_loss"], first.history["val_loss"], rtol=1e-5)


class StopBeforeTraining(Exception):
    pass


def stop_before_training(*args, **kwargs):
    raise StopBeforeTraining


def test_deterministic_flag_reaches_tensorflow(frame, tmp_path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: calls.append("on"))
    set_seed(3)
    assert calls == []
    monkeypatch.setattr(TrainConfig, "build_model", stop_before_training)
    with pytest.raises(StopBeforeTraining):
        train(tiny_config(tmp_path, deterministic=True), frame)
    assert calls == ["on"]


def test_tensorboard_writes_event_files(frame, tmp_path) -> None:
    train(tiny_config(tmp_path, epochs=1, tensorboard=True), frame)
    assert list((tmp_path / "runs").rglob("events.out.tfevents.*")), "TensorBoard wrote no event file"


class InterruptAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


class RecordOptimizerStep(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start_step = int(self.model.optimizer.iterations)


def test_resume_continues_from_the_last_completed_epoch(frame, tmp_path, capsys) -> None:
    config = tiny_config(tmp_path, task="binary", epochs=3, run_name="interrupted", augment=True)
    with pytest.raises(KeyboardInterrupt):
        train(config, frame, callbacks=[InterruptAfterFirstEpoch()])
    resume_dir = config.path("models") / ".resume" / "interrupted"
    assert (
        f"'interrupted' was interrupted. Its 1 completed epoch(s) are kept in {resume_dir}"
        in capsys.readouterr().err
    )
    assert sorted(path.name for path in resume_dir.iterdir()) == ["epoch_001.npz", "state.json"]
    first_epoch_auc = read_metadata(next(config.path("models").glob("*.h5")))["val_metric"]

    step = RecordOptimizerStep()
    result = train(TrainConfig(**{**config.to_params(), "resume": True}), frame, callbacks=[step])
    train_images = len(training_frames(frame, config)["train"])
    assert step.start_step == -(-train_images // config.batch_size)  # Adam state of epoch 1 restored
    assert result.history["epoch"] == [1, 2, 3] and result.version == 1
    assert result.history["val_roc_auc"][0] == pytest.approx(first_epoch_auc)
    assert result.best_metric == max(result.history["val_roc_auc"])
    assert len(list(config.path("models").glob("*.h5"))) == 1
    assert not resume_dir.exists()


class TerminateAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_stops_training_with_how_to_resume(frame, tmp_path) -> None:
    config = tiny_config(tmp_path, epochs=2, run_name="terminated")
    handler = signal.getsignal(signal.SIGTERM)
    resume_dir = config.path("models") / ".resume" / "terminated"
    with pytest.raises(TrainingStopped, match="'terminated' was stopped by SIGTERM") as stopped:
        train(config, frame, callbacks=[TerminateAfterFirstEpoch()])
    assert f"Its 1 completed epoch(s) are kept in {resume_dir}.\nFix: " in str(stopped.value)
    assert "resume=True and the same run_name 'terminated'" in str(stopped.value)
    assert signal.getsignal(signal.SIGTERM) is handler  # restored once training stopped
    result = train(TrainConfig(**{**config.to_params(), "resume": True}), frame)
    assert result.history["epoch"] == [1, 2]


class WeightsAtPhaseBounds(keras.callbacks.Callback):
    """Copies of every layer's weights when each fit starts and ends (the last pair is phase 2)."""

    def __init__(self):
        super().__init__()
        self.begin, self.end = {}, {}

    def on_train_begin(self, logs=None):
        self.begin = {layer.name: [w.copy() for w in layer.get_weights()] for layer in self.model.layers}

    def on_train_end(self, logs=None):
        self.end = {layer.name: [w.copy() for w in layer.get_weights()] for layer in self.model.layers}


def test_fine_tuning_changes_only_the_top_backbone_layers(frame, tmp_path) -> None:
    config = tiny_config(
        tmp_path, arch="mobilenetv2", epochs=1, fine_tune_layers=12, fine_tune_epochs=1, fine_tune_lr=1e-3
    )
    bounds = WeightsAtPhaseBounds()
    result = train(config, frame, callbacks=[bounds])
    assert result.history["phase"] == [1, 2] and result.history["epoch"] == [1, 2]
    backbone = backbone_layers(result.model)
    top = {layer.name for layer in backbone[-12:]}
    changed = {
        name
        for name, weights in bounds.end.items()
        if any(not np.array_equal(a, b) for a, b in zip(weights, bounds.begin[name], strict=True))
    }
    batch_norm = {layer.name for layer in backbone if isinstance(layer, keras.layers.BatchNormalization)}
    backbone_changed = changed & {layer.name for layer in backbone}
    assert backbone_changed and backbone_changed <= top - batch_norm
    assert "logits" in changed


def test_cosine_schedule_warms_up_for_an_epoch_then_decays_to_one_percent(frame, tmp_path) -> None:
    result = train(tiny_config(tmp_path, lr=1e-2, lr_schedule="cosine", epochs=3), frame)
    rates = result.history["learning_rate"]
    assert rates[0] == pytest.approx(1e-2, rel=1e-3) and 1e-4 < rates[1] < 1e-2
    assert rates[-1] == pytest.approx(1e-4, rel=1e-3)


class WeightsAtStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = [weight.numpy() for weight in self.model.trainable_weights]


def test_weight_average_is_what_validation_and_the_checkpoint_see(frame, tmp_path) -> None:
    """A near-frozen average (momentum 0.99999) stays at the weights after the first step, so the saved
    checkpoint's trainable weights are within one Adam step (~lr) of the start (BatchNorm statistics are not
    averaged); validation is scored on those same weights."""
    distances = {}
    for momentum in (None, 0.99999):
        config = tiny_config(tmp_path / str(momentum), lr=1e-3, ema_momentum=momentum)
        val = training_frames(frame, config)["val"]
        images = load_image_array(val["image_path"], SIZE, progress=False).astype(np.float32)
        start, probe = WeightsAtStart(), ValidationProbe(images, val["label"].to_numpy())
        result = train(config, frame, callbacks=[start, probe])
        saved = [weight.numpy() for weight in load_checkpoint(result.checkpoint_path)[0].trainable_weights]
        distances[momentum] = max(np.abs(a - b).max() for a, b in zip(saved, start.weights, strict=True))
        assert all(logged == pytest.approx(recomputed) for logged, recomputed in probe.pairs)
    assert distances[0.99999] < 1.5e-3 < 5e-3 < distances[None], distances


def test_time_budget_stops_after_the_epoch_that_would_overrun_and_skips_fine_tuning(frame, tmp_path) -> None:
    config = tiny_config(
        tmp_path, arch="mobilenetv2", epochs=3, fine_tune_layers=12, fine_tune_epochs=2, time_budget_s=1e-3
    )
    result = train(config, frame)
    assert result.history["epoch"] == [1] and result.history["phase"] == [1]
    assert result.checkpoint_path.is_file() and result.stopped_by_budget
    unlimited = train(replace(config, time_budget_s=None, epochs=2, fine_tune_epochs=0), frame)
    assert unlimited.history["epoch"] == [1, 2] and not unlimited.stopped_by_budget


@pytest.mark.parametrize(("epochs_in_fit", "cut"), [(3, True), (1, False)])
def test_a_budget_spent_at_the_last_epoch_of_a_fit_cuts_nothing(epochs_in_fit: int, cut: bool) -> None:
    """The budget stops the fit either way; it counts as cutting the run short only when epochs were left."""
    budget = TimeBudget(seconds=1e-6)
    budget.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    budget.set_params({"epochs": epochs_in_fit})
    budget.on_epoch_begin(0)
    budget.on_epoch_end(0)
    assert budget.exhausted and budget.model.stop_training and budget.cut_a_phase is cut


def test_training_on_every_partition_keeps_the_last_epoch(frame, tmp_path) -> None:
    from helpers.evaluation.sets import evaluation_set
    from helpers.models.checkpoints import best_checkpoint, load_checkpoint

    config = tiny_config(tmp_path, epochs=3, patience=1, train_partitions=["train", "val", "test"])
    assert config.keeps_last_epoch and len(training_frames(frame, config)["train"]) == len(frame)
    result = train(config, frame)
    model, metadata = load_checkpoint(result.checkpoint_path)
    assert metadata["epoch"] == 3 and metadata["trained_on"] == ["train", "val", "test"]  # no early stop
    with pytest.raises(CheckpointError, match="no checkpoint|No checkpoint"):
        best_checkpoint(config.models_dir)  # its validation score is not held out: never "the best"
    metadata["split_file"] = "any.csv"
    with pytest.raises(CheckpointError, match="no held-out test images"):
        evaluation_set("internal", metadata=metadata)


def test_train_partitions_must_include_train() -> None:
    with pytest.raises(SkinLesionError, match="train_partitions"):
        TrainConfig(train_partitions=["val"])
