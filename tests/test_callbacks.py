"""Callbacks and monitored metrics on tiny Dense models: exact validation metric, best-only checkpoints,
resume snapshots (weights + optimizer state) and the progress line."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

from helpers.core.errors import DataError
from helpers.models.checkpoints import read_metadata
from helpers.training.callbacks import (
    BalancedAccuracy,
    BestCheckpoint,
    EpochProgress,
    RunState,
    ValidationMetric,
    restore_snapshot,
    save_snapshot,
    validation_score,
)

RNG = np.random.default_rng(0)
FEATURES = RNG.normal(size=(40, 5)).astype(np.float32)
LABELS = RNG.integers(0, 7, 40).astype(np.int32)


def tiny_model(units: int = 7) -> keras.Model:
    keras.utils.set_random_seed(0)
    activation = "softmax" if units > 1 else "sigmoid"
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(units, activation=activation)], name="tiny"
    )
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy())
    return model


def test_validation_score_matches_sklearn() -> None:
    probabilities = RNG.random((40, 7))
    binary_labels, scores = LABELS % 2, probabilities[:, :1]
    assert validation_score("balanced_accuracy", LABELS, probabilities) == pytest.approx(
        balanced_accuracy_score(LABELS, probabilities.argmax(1))
    )
    assert validation_score("roc_auc", binary_labels, scores) == pytest.approx(
        roc_auc_score(binary_labels, scores)
    )
    assert validation_score("pr_auc", binary_labels, scores) == pytest.approx(
        average_precision_score(binary_labels, scores)
    )
    with pytest.raises(ValueError, match="unknown monitored metric"):
        validation_score("accuracy", LABELS, probabilities)


def test_streaming_balanced_accuracy_matches_sklearn() -> None:
    labels = np.array([0, 0, 1, 1, 1, 4, 4, 0])  # classes 2, 3, 5, 6 absent, as sklearn ignores them
    predicted = np.array([0, 1, 1, 1, 0, 4, 2, 0])
    metric = BalancedAccuracy(7)
    for batch in (slice(0, 5), slice(5, 8)):
        metric.update_state(labels[batch], np.eye(7)[predicted[batch]])
    assert float(metric.result()) == pytest.approx(balanced_accuracy_score(labels, predicted))
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_validation_metric_writes_exact_val_metric_and_loss() -> None:
    model = tiny_model()
    callback = ValidationMetric(FEATURES, LABELS, metric="balanced_accuracy", loss=model.loss)
    callback.set_model(model)
    logs = {"loss": 1.0}
    callback.on_epoch_end(0, logs)
    probabilities = model.predict(FEATURES, verbose=0)
    assert logs["val_balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(LABELS, probabilities.argmax(1))
    )
    expected_loss = -np.mean(np.log(probabilities[np.arange(40), LABELS]))
    assert logs["val_loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_binary_validation_with_one_class_or_misaligned_inputs_is_refused() -> None:
    with pytest.raises(DataError, match="only one class"):
        ValidationMetric(FEATURES, np.zeros(40), metric="roc_auc", loss=keras.losses.BinaryCrossentropy())
    model = tiny_model()
    callback = ValidationMetric(FEATURES[:30], LABELS, metric="balanced_accuracy", loss=model.loss)
    callback.set_model(model)
    with pytest.raises(DataError, match="30 predictions for 40 labels"):
        callback.on_epoch_end(0, {})


def test_best_checkpoint_keeps_only_the_best_of_this_run(tmp_path) -> None:
    other_version = tmp_path / "tiny_v1_03_0.900.h5"
    other_version.write_bytes(b"an earlier version: never touched")
    state = RunState(run_name="run", version=2, history={"epoch": [1]})
    callback = BestCheckpoint(
        state,
        monitor="val_balanced_accuracy",
        models_dir=tmp_path,
        arch="tiny",
        metadata={"params": {"lr": 0.1}},
    )
    callback.set_model(tiny_model())
    for epoch, value in enumerate([0.40, 0.55, 0.50]):
        callback.on_epoch_end(epoch, {"val_balanced_accuracy": value})
    assert sorted(path.name for path in tmp_path.glob("*.h5")) == [
        "tiny_v1_03_0.900.h5",
        "tiny_v2_02_0.550.h5",
    ]
    assert not (tmp_path / "tiny_v2_01_0.400.json").exists()
    metadata = read_metadata(tmp_path / "tiny_v2_02_0.550.h5")
    assert (metadata["epoch"], metadata["val_metric"], metadata["version"]) == (2, 0.55, 2)
    assert metadata["params"] == {"lr": 0.1} and metadata["history"] == {"epoch": [1]}
    assert (state.best_metric, state.best_path) == (0.55, str(tmp_path / "tiny_v2_02_0.550.h5"))
    assert callback.best_weights is not None


def test_best_checkpoint_needs_the_validation_metric_first(tmp_path) -> None:
    callback = BestCheckpoint(
        RunState("run", 1), monitor="val_roc_auc", models_dir=tmp_path, arch="tiny", metadata={}
    )
    callback.set_model(tiny_model())
    with pytest.raises(Exception, match="put ValidationMetric before"):
        callback.on_epoch_end(0, {"loss": 0.3})


def test_snapshot_round_trip_restores_weights_and_optimizer_state(tmp_path) -> None:
    trained = tiny_model()
    trained.fit(FEATURES, LABELS, epochs=2, batch_size=10, verbose=0)
    state = RunState(run_name="run", version=1, epoch=2)
    save_snapshot(tmp_path, state, trained, trained.optimizer)
    state.epoch = 3
    save_snapshot(tmp_path, state, trained, trained.optimizer)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch_003.npz", "state.json"]
    loaded_state = RunState.load(tmp_path)
    assert loaded_state == state
    fresh = tiny_model()
    restore_snapshot(tmp_path, loaded_state, fresh, fresh)
    assert int(fresh.optimizer.iterations) == 8
    for saved, restored in zip(trained.optimizer.variables, fresh.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(restored))
    trained.fit(FEATURES, LABELS, epochs=1, batch_size=40, shuffle=False, verbose=0)
    fresh.fit(FEATURES, LABELS, epochs=1, batch_size=40, shuffle=False, verbose=0)
    for a, b in zip(trained.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_run_state_phase_end_and_missing_or_broken_state(tmp_path) -> None:
    state = RunState("run", 1, history={"epoch": [1, 2, 3], "phase": [1, 1, 2]})
    assert (state.phase_end_epoch(1), state.phase_end_epoch(2), state.phase_end_epoch(3)) == (2, 3, 0)
    assert RunState.load(tmp_path) is None
    (tmp_path / "state.json").write_text(json.dumps({"unexpected": 1}))
    with pytest.raises(Exception, match="Unreadable resume state"):
        RunState.load(tmp_path)


def test_epoch_progress_prints_one_line_per_epoch(capsys) -> None:
    progress = EpochProgress("demo")
    progress.set_params({"epochs": 3})
    progress.on_epoch_begin(1)
    progress.on_epoch_end(1, {"loss": 0.5, "val_balanced_accuracy": 0.61234})
    progress.on_train_end()
    assert "demo: epoch 2/3  loss 0.5  val_balanced_accuracy 0.6123" in capsys.readouterr().out
