"""Training callbacks: the monitored metric (train side and on the whole validation set), the best-epoch
checkpoint, a resumable per-epoch snapshot and a one-line-per-epoch progress display.

Order matters: :class:`ValidationMetric` writes ``val_loss`` and ``val_{metric}`` into each epoch's logs,
so it must come before everything that reads them (history, checkpoint, EarlyStopping, ReduceLROnPlateau,
CSVLogger).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score
from tqdm.auto import tqdm

from helpers.core.atomic import atomic_path, atomic_write_text
from helpers.core.config import CLASS_NAMES
from helpers.core.errors import CheckpointError, DataError, SkinLesionError
from helpers.models.checkpoints import checkpoint_name, save_checkpoint, sidecar_path
from helpers.training.losses import class_targets

MONITORED_METRICS: dict[str, tuple[str, ...]] = {
    "multiclass": ("balanced_accuracy",),
    "binary": ("roc_auc", "pr_auc"),
}
"""The metrics a run can monitor per task; the first is the default."""


def validation_score(metric: str, labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The monitored metric with scikit-learn: balanced accuracy of the arg-max class (multiclass), or
    ROC-AUC / PR-AUC (average precision) of the malignant probability (binary)."""
    labels = np.asarray(labels).reshape(-1)
    if metric == "balanced_accuracy":
        return float(balanced_accuracy_score(labels.astype(int), np.argmax(probabilities, axis=-1)))
    scores = np.asarray(probabilities).reshape(-1)
    if metric == "roc_auc":
        return float(roc_auc_score(labels, scores))
    if metric == "pr_auc":
        return float(average_precision_score(labels, scores))
    raise ValueError(f"unknown monitored metric {metric!r}; choose one of {MONITORED_METRICS}")


@keras.saving.register_keras_serializable(package="skinlesion")
class BalancedAccuracy(keras.metrics.Metric):
    """Streaming balanced accuracy (mean per-class recall over the classes seen) for the training batches.

    Sample weights (class weights) are ignored on purpose: the metric already weighs classes equally. Soft
    targets (distillation, mixup) count as their most probable class: the true label
    (helpers.training.distill, helpers.data.augment.mixup).
    """

    def __init__(self, num_classes: int = len(CLASS_NAMES), name: str = "balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.confusion = self.add_variable(
            shape=(num_classes, num_classes), initializer="zeros", name="confusion", dtype="float32"
        )

    def update_state(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        """Add the batch to the confusion matrix (rows: true class, columns: predicted class)."""
        labels = keras.ops.argmax(class_targets(y_true, self.num_classes), axis=-1)  # soft targets too
        true = keras.ops.one_hot(labels, self.num_classes)
        predicted = keras.ops.one_hot(keras.ops.argmax(y_pred, axis=-1), self.num_classes)
        self.confusion.assign_add(keras.ops.matmul(keras.ops.transpose(true), predicted))

    def result(self) -> tf.Tensor:
        """Mean recall over the classes seen so far."""
        support = keras.ops.sum(self.confusion, axis=1)
        recall = keras.ops.diagonal(self.confusion) / keras.ops.maximum(support, 1.0)
        seen = keras.ops.cast(support > 0, "float32")
        return keras.ops.sum(recall * seen) / keras.ops.maximum(keras.ops.sum(seen), 1.0)

    def reset_state(self) -> None:
        """Forget the batches seen (Keras calls this at the start of every epoch)."""
        self.confusion.assign(keras.ops.zeros_like(self.confusion))

    def get_config(self) -> dict:
        """The constructor arguments, so a saved model can rebuild the metric."""
        return {**super().get_config(), "num_classes": self.num_classes}


def training_metric(metric: str, num_classes: int = len(CLASS_NAMES)) -> keras.metrics.Metric:
    """The Keras metric that tracks ``metric`` on the training batches (named ``metric`` in the logs).

    Binary PR-AUC uses Keras's interpolated PR curve, a close approximation of average precision.
    """
    if metric == "balanced_accuracy":
        return BalancedAccuracy(num_classes, name=metric)
    if metric in ("roc_auc", "pr_auc"):
        return keras.metrics.AUC(curve="ROC" if metric == "roc_auc" else "PR", name=metric)
    raise ValueError(f"unknown monitored metric {metric!r}; choose one of {MONITORED_METRICS}")


class ValidationMetric(keras.callbacks.Callback):
    """At each epoch end, predict the WHOLE validation set once and write ``val_loss`` and ``val_{metric}``
    (scikit-learn, exact) into the logs for the callbacks after it.

    ``inputs`` are the validation images (a dataset of ``(x, y)`` batches in ``labels`` order) or features
    (an array); ``loss`` is the training loss, applied unweighted to the integer / 0-1 ``labels``.
    """

    def __init__(
        self,
        inputs: tf.data.Dataset | np.ndarray,
        labels: np.ndarray,
        *,
        metric: str,
        loss: keras.losses.Loss,
    ):
        super().__init__()
        self.inputs = inputs
        self.labels = np.asarray(labels)
        self.metric = metric
        self.loss = loss
        _check_validation_labels(metric, self.labels)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        probabilities = self.model.predict(self.inputs, verbose=0)
        if len(probabilities) != len(self.labels):
            raise DataError(
                f"the validation inputs gave {len(probabilities)} predictions for {len(self.labels)} labels",
                fix="build the validation inputs and labels from the same frame rows, in the same order",
            )
        logs = {} if logs is None else logs
        logs["val_loss"] = float(keras.ops.convert_to_numpy(self.loss(self.labels, probabilities)))
        logs[f"val_{self.metric}"] = validation_score(self.metric, self.labels, probabilities)


def _check_validation_labels(metric: str, labels: np.ndarray) -> None:
    if metric not in MONITORED_METRICS["multiclass"] + MONITORED_METRICS["binary"]:
        raise ValueError(f"unknown monitored metric {metric!r}; choose one of {MONITORED_METRICS}")
    if labels.size == 0:
        raise DataError("the validation set is empty", fix="give the frame a non-empty 'val' partition")
    if metric in MONITORED_METRICS["binary"] and np.unique(labels).size < 2:
        raise DataError(
            f"the validation set holds only one class, so {metric} is undefined",
            fix="use a stratified split with benign and malignant images in the 'val' partition",
        )


@dataclass
class RunState:
    """What an interrupted run needs to continue: saved as ``state.json`` in its resume folder.

    ``epoch`` counts the completed epochs over all phases (1-based numbering of the last one); ``phase`` is
    the phase of that epoch; ``snapshot`` names the .npz holding its weights and optimizer state.
    """

    run_name: str
    version: int
    params: dict = field(default_factory=dict)
    epoch: int = 0
    phase: int = 1
    finished_phases: list[int] = field(default_factory=list)
    best_metric: float | None = None
    best_path: str | None = None
    snapshot: str | None = None
    history: dict[str, list] = field(default_factory=dict)

    def save(self, directory: Path) -> Path:
        """Write this state to ``directory/state.json`` atomically."""
        return atomic_write_text(Path(directory) / "state.json", json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, directory: Path) -> RunState | None:
        """The state saved in ``directory``, or None when there is none."""
        path = Path(directory) / "state.json"
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as error:
            raise CheckpointError(
                f"Unreadable resume state {path}: {error}\n"
                f"Fix: delete {path.parent} and train with resume=False."
            ) from error

    def phase_end_epoch(self, phase: int) -> int:
        """The last epoch (1-based) trained in ``phase`` so far, 0 if none."""
        pairs = zip(self.history.get("epoch", []), self.history.get("phase", []), strict=True)
        return max((epoch for epoch, epoch_phase in pairs if epoch_phase == phase), default=0)


class RecordHistory(keras.callbacks.Callback):
    """Append each epoch's logs (plus ``epoch``, ``phase`` and the learning rate used) to ``state.history``,
    so the history stays continuous across phases and resumed sessions."""

    def __init__(self, state: RunState, phase: int):
        super().__init__()
        self.state = state
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": epoch + 1, "phase": self.phase, "learning_rate": learning_rate}
        row.update({key: float(value) for key, value in (logs or {}).items()})
        for key, value in row.items():
            self.state.history.setdefault(key, []).append(value)
        self.state.epoch, self.state.phase = epoch + 1, self.phase


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model whenever ``monitor`` improves, as ``{arch}_v{version}_{epoch:02d}_{metric:.3f}.h5`` plus
    its JSON sidecar (``metadata``, epoch, metric, history so far), via :mod:`helpers.models.checkpoints`.

    One run keeps only its best file: a better epoch replaces the previous best of the SAME run and
    version; files of other versions are never touched. ``model_to_save`` is the full image model when
    the fitted model is only its head (cached-features path). ``keep_last`` saves every epoch instead (the
    last one is kept), for runs that train on their validation images.
    """

    def __init__(
        self,
        state: RunState,
        *,
        monitor: str,
        models_dir: Path,
        arch: str,
        metadata: dict,
        model_to_save: keras.Model | None = None,
        keep_last: bool = False,
    ):
        super().__init__()
        self.keep_last = keep_last
        self.state = state
        self.monitor = monitor
        self.models_dir = Path(models_dir)
        self.arch = arch
        self.metadata = metadata
        self.model_to_save = model_to_save
        self.best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise SkinLesionError(
                f"{self.monitor!r} is not in the epoch logs: put ValidationMetric before BestCheckpoint"
            )
        if not self.keep_last and self.state.best_metric is not None and not value > self.state.best_metric:
            return
        model = self.model_to_save or self.model
        path = self.models_dir / checkpoint_name(self.arch, self.state.version, epoch + 1, value)
        metadata = {
            **self.metadata,
            "version": self.state.version,
            "epoch": epoch + 1,
            "phase": self.state.phase,
            "monitor": self.monitor,
            "val_metric": float(value),
            "history": self.state.history,
        }
        save_checkpoint(model, path, metadata)
        previous, self.state.best_path, self.state.best_metric = self.state.best_path, str(path), float(value)
        self.best_weights = model.get_weights()
        if previous and Path(previous) != path:
            delete_checkpoint_files(Path(previous))


def delete_checkpoint_files(path: Path) -> None:
    """Remove a superseded best checkpoint of the current run and its JSON sidecar."""
    path.unlink(missing_ok=True)
    sidecar_path(path).unlink(missing_ok=True)


class ResumeCheckpoint(keras.callbacks.Callback):
    """After every epoch, snapshot the weights of ``model_to_save`` and the fitted model's optimizer state to
    ``directory/epoch_NNN.npz`` (atomic), then point ``state.json`` at it and drop the older snapshot."""

    def __init__(self, state: RunState, directory: Path, *, model_to_save: keras.Model | None = None):
        super().__init__()
        self.state = state
        self.directory = Path(directory)
        self.model_to_save = model_to_save

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        save_snapshot(self.directory, self.state, self.model_to_save or self.model, self.model.optimizer)


def save_snapshot(directory: Path, state: RunState, model: keras.Model, optimizer: keras.Optimizer) -> None:
    """Save ``model``'s weights and ``optimizer``'s variables for ``state.epoch``; record it in the state."""
    name = f"epoch_{state.epoch:03d}.npz"
    arrays = {f"weight_{i}": value for i, value in enumerate(model.get_weights())}
    arrays |= {f"optimizer_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(optimizer.variables)}
    with atomic_path(Path(directory) / name) as tmp:
        np.savez(tmp, **arrays)
    previous, state.snapshot = state.snapshot, name
    state.save(directory)
    if previous and previous != name:
        (Path(directory) / previous).unlink(missing_ok=True)


def restore_snapshot(directory: Path, state: RunState, model: keras.Model, fitted: keras.Model) -> None:
    """Load the snapshot's weights into ``model`` and its optimizer state into the compiled ``fitted`` model
    (``model`` itself or its head), building the optimizer first."""
    path = Path(directory) / str(state.snapshot)
    optimizer = fitted.optimizer
    try:
        with np.load(path) as data:
            weights, optimizer_values = _numbered(data, "weight_"), _numbered(data, "optimizer_")
        model.set_weights(weights)
        optimizer.build(fitted.trainable_variables)
        if len(optimizer_values) != len(optimizer.variables):
            raise ValueError(
                f"{len(optimizer_values)} optimizer variables saved, {len(optimizer.variables)} now"
            )
        for variable, value in zip(optimizer.variables, optimizer_values, strict=True):
            variable.assign(value)
    except (OSError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"Cannot resume from {path}: {error}\nFix: train with resume=False (or delete {path.parent})."
        ) from error


def _numbered(data: np.lib.npyio.NpzFile, prefix: str) -> list[np.ndarray]:
    """The arrays ``{prefix}0``, ``{prefix}1``, ... of a snapshot, in order."""
    count = sum(name.startswith(prefix) for name in data.files)
    return [data[f"{prefix}{i}"] for i in range(count)]


class EpochProgress(keras.callbacks.Callback):
    """A tqdm bar over epochs plus one compact line per epoch with every logged metric and its duration."""

    def __init__(self, description: str):
        super().__init__()
        self.description = description
        self.bar: tqdm | None = None
        self.epoch_started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.params["epochs"], initial=epoch, desc=self.description, unit="epoch")
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = "  ".join(f"{key} {value:.4g}" for key, value in (logs or {}).items())
        seconds = time.perf_counter() - self.epoch_started
        epochs = self.params["epochs"]  # the line starts with the run's name: runs trained at once interleave
        self.bar.write(f"{self.description}: epoch {epoch + 1}/{epochs}  {metrics}  ({seconds:.1f} s)")
        self.bar.update(1)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
