"""Train a classifier in up to two phases, checkpoint its best epoch, and resume interrupted runs.

Phase 1 trains the head on the frozen backbone (from cached features when ``cache_features``, without
augmentation, distillation or mixup; from-scratch CNNs train end to end instead); phase 2
(``fine_tune_layers > 0``) unfreezes the top backbone layers (BatchNorm stays frozen) at ``fine_tune_lr``.
Step by step, as notebook 02 does::

    run = TrainingRun(config, frame, split_file=split_file)   # the model, the data, the resume state
    run.model.summary()
    run.head_phase()
    run.fine_tune_phase()
    result = run.finish()

or in one call: ``result = train(config, frame, split_file=split_file)``.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from helpers.core.config import TASK_CLASSES
from helpers.core.errors import DataError, SkinLesionError
from helpers.data.pipeline import frame_labels, load_image_array, make_dataset
from helpers.models.build import head_model, set_backbone_trainable
from helpers.models.checkpoints import load_checkpoint, next_version
from helpers.training.callbacks import (
    BestCheckpoint,
    EpochProgress,
    RecordHistory,
    ResumeCheckpoint,
    RunState,
    ValidationMetric,
    restore_snapshot,
    training_metric,
)
from helpers.training.distill import distillation_targets, teacher_probabilities
from helpers.training.feature_cache import cached_features, train_head_on_features
from helpers.training.losses import class_weights
from helpers.training.settings import RESUME_PARAMS, TrainConfig


class TrainingStopped(SkinLesionError):
    """Training ended by SIGTERM; the message says how to resume from the last completed epoch."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the model with its best weights and how it got there.

    ``images_per_s`` is training images processed (epochs x train images) per second of ``wall_time_s``;
    ``history`` holds per-epoch ``epoch``, ``phase``, ``learning_rate``, ``loss``, ``val_loss``, the
    monitored metric on the training batches and ``val_{metric}`` on the whole validation set;
    ``stopped_by_budget``: the time budget ended the run before the epochs it was configured for; ``model`` is
    None where another process trained it (:mod:`helpers.training.streams`; the checkpoint holds its weights).
    """

    model: keras.Model | None
    checkpoint_path: Path
    history: dict[str, list]
    monitored: str
    best_metric: float
    run_name: str
    version: int
    wall_time_s: float
    images_per_s: float
    stopped_by_budget: bool = False


def training_frames(frame: pd.DataFrame, config: TrainConfig) -> dict[str, pd.DataFrame]:
    """The training images (the ``train_partitions``) and the ``val`` partition of ``frame``, each capped at
    ``config.max_images``, stratified."""
    if "partition" not in frame.columns:
        raise DataError("the frame has no 'partition' column", fix="split it with helpers.data.split_dataset")
    parts = {}
    for name, partitions in (("train", config.train_partitions), ("val", ("val",))):
        part = frame[frame["partition"].isin(partitions)]
        if part.empty:
            raise DataError(f"the frame has no '{name}' images", fix="check the split assignment")
        if config.max_images is not None and len(part) > config.max_images:
            labels = frame_labels(part, config.task)
            part = part.groupby(labels, group_keys=False).sample(
                frac=config.max_images / len(part), random_state=config.seed
            )
        parts[name] = part.sort_index().reset_index(drop=True)
    return parts


def train(
    config: TrainConfig,
    frame: pd.DataFrame,
    *,
    split_file: str | Path | None = None,
    data_description: str = "",
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train ``config``'s model on ``frame``'s train partition, monitoring its val partition; save the best
    epoch as a checkpoint (sidecar: all params, the split file, ``data_description``, history) and return it.

    The steps of :class:`TrainingRun` in one call. ``resume=True`` continues an interrupted run of the same
    ``run_name`` from its last completed epoch; ``callbacks`` run after the built-in ones.
    """
    run = TrainingRun(
        config, frame, split_file=split_file, data_description=data_description, callbacks=callbacks
    )
    run.head_phase()
    run.fine_tune_phase()
    return run.finish()


class TrainingRun:
    """One training run as visible steps: the model, the data and the resume state are made here; then
    :meth:`head_phase`, :meth:`fine_tune_phase` (each skipped when not configured or already done by an
    interrupted run) and :meth:`finish`, which puts the best epoch's weights back and returns the result.
    A phase stopped by SIGTERM (raising :class:`TrainingStopped`) or Ctrl-C says how to resume.

    ``model`` replaces the one ``config`` describes (e.g. another head): it must keep
    :func:`helpers.models.build_model`'s layer names ``features``, ``logits`` and ``probabilities`` (on
    several GPUs, build it inside ``distribution_strategy().scope()``). ``loss`` replaces the task's
    cross-entropy (any Keras loss on the pipeline's integer or 0/1 labels; with ``distill_from`` or
    ``mixup_alpha``, on float (B, K) or (B,) soft targets).
    """

    def __init__(
        self,
        config: TrainConfig,
        frame: pd.DataFrame,
        *,
        split_file: str | Path | None = None,
        data_description: str = "",
        model: keras.Model | None = None,
        loss: keras.losses.Loss | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ):
        self.started = time.perf_counter()
        self.config = config
        self.frames = training_frames(frame, config)
        self.split_file = split_file
        self.extra_callbacks = list(callbacks)
        self.resume_dir = config.path("models") / ".resume" / config.name
        self.run_dir = config.path("runs") / config.name
        self.budget = TimeBudget(config.time_budget_s)
        self.state = self._initial_state()
        self.first_epoch = self.state.epoch
        set_seed(config.seed, deterministic_ops=config.deterministic)
        self.strategy = distribution_strategy()
        with self.strategy.scope():
            self.model = model or config.build_model()
        self.loss = loss or config.loss()
        self.labels = {name: frame_labels(part, config.task) for name, part in self.frames.items()}
        self.class_weight = class_weights(
            self.labels["train"], config.class_weighting, len(TASK_CLASSES[config.task])
        )
        self.targets = self._distillation_targets()
        self.best = BestCheckpoint(
            self.state,
            monitor=config.monitored,
            models_dir=config.path("models"),
            arch=config.arch,
            metadata=self._metadata(data_description),
            model_to_save=self.model,
            keep_last=config.keeps_last_epoch,
        )
        self._images: dict[str, np.ndarray] = {}

    def _distillation_targets(self) -> np.ndarray | None:
        """The training images' soft targets when ``distill_from`` names a teacher, else None (the labels)."""
        config = self.config
        if config.distill_from is None:
            return None
        teacher = teacher_probabilities(
            config.distill_from,
            self.frames["train"],
            self.class_names,
            split_file=self.split_file,
            train_partitions=config.train_partitions,
        )
        return distillation_targets(self.labels["train"], teacher, config.distill_weight)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes the model predicts, in output order."""
        return TASK_CLASSES[self.config.task]

    def augmented_batch(self, count: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """``count`` random training images as the model sees them (augmented when ``augment``; mixup not
        shown), decoded and resized as in training, with their labels: uint8 (count, H, W, 3) and the label of
        each."""
        config, train = self.config, self.frames["train"]
        sample = train.sample(n=min(count, len(train)), random_state=config.seed)
        dataset = make_dataset(
            sample,
            task=config.task,
            image_size=config.input_size,
            batch_size=len(sample),
            augment=config.augment,
            augment_mode=config.augment_mode,
            seed=config.seed,
        )
        images, labels = next(iter(dataset))
        return np.clip(images.numpy(), 0, 255).astype(np.uint8), labels.numpy()

    def finish(self) -> TrainResult:
        """Put the best epoch's weights back, drop the resume state and return the run's result."""
        self.restore_best()
        shutil.rmtree(self.resume_dir, ignore_errors=True)
        wall_time = time.perf_counter() - self.started
        return TrainResult(
            model=self.model,
            checkpoint_path=Path(str(self.state.best_path)),
            history=self.state.history,
            monitored=self.config.monitored,
            best_metric=float(self.state.best_metric),
            run_name=self.config.name,
            version=self.state.version,
            wall_time_s=wall_time,
            images_per_s=len(self.frames["train"]) * (self.state.epoch - self.first_epoch) / wall_time,
            stopped_by_budget=self.budget.cut_a_phase
            or (self.budget.exhausted and self.fine_tunes and 2 not in self.state.finished_phases),
        )

    @property
    def fine_tunes(self) -> bool:
        """Whether phase 2 (fine-tuning the top backbone layers) is part of this run."""
        return (
            not self.config.from_scratch
            and self.config.fine_tune_layers > 0
            and self.config.fine_tune_epochs > 0
        )

    def _initial_state(self) -> RunState:
        config = self.config
        if config.resume:
            state = RunState.load(self.resume_dir)
            if state is not None:
                _check_resumable(state, config, self.resume_dir)
                return state
            warnings.warn(
                f"No interrupted run {config.name!r} in {self.resume_dir}: starting afresh", stacklevel=3
            )
        shutil.rmtree(self.resume_dir, ignore_errors=True)
        (self.run_dir / "history.csv").unlink(missing_ok=True)
        version = (
            config.version if config.version is not None else next_version(config.arch, config.path("models"))
        )
        return RunState(run_name=config.name, version=version, params=config.to_params())

    def _metadata(self, data_description: str) -> dict:
        config = self.config
        return {
            "run_name": config.name,
            "arch": config.arch,
            "task": config.task,
            "class_names": list(TASK_CLASSES[config.task]),
            "input_size": list(config.input_size),
            "params": config.to_params(),
            "split_file": None if self.split_file is None else str(Path(self.split_file).resolve()),
            "data_description": data_description,
            "train_images": len(self.frames["train"]),
            "trained_on": list(config.train_partitions),
            "val_images": len(self.frames["val"]),
        }

    def head_phase(self) -> None:
        """Phase 1: the head on the frozen backbone (cached features when possible), or end to end.
        Skipped when an interrupted run being resumed has finished it."""
        if 1 in self.state.finished_phases:
            return
        with self.strategy.scope(), self._stops_say_how_to_resume():
            self._head_phase()

    def _head_phase(self) -> None:
        config = self.config
        use_cache = (
            config.cache_features
            and not config.augment
            and not config.from_scratch
            and not config.soft_targets
        )
        if not config.from_scratch:
            set_backbone_trainable(self.model, False)
        fitted = head_model(self.model) if use_cache else self.model
        self._compile(fitted, config.lr, config.epochs, average_weights=config.from_scratch)
        self._resume_snapshot(fitted, phase=1)
        if use_cache:
            train, val = (
                cached_features(
                    self.model,
                    self.frames[name],
                    task=config.task,
                    arch=config.arch,
                    split_file=self.split_file,
                    cache_dir=config.path("cache"),
                )
                for name in ("train", "val")
            )
            train_head_on_features(
                fitted,
                train,
                val,
                metric=config.metric,
                epochs=config.epochs,
                initial_epoch=self.state.epoch,
                batch_size=config.batch_size,
                callbacks=self._callbacks(phase=1),
                class_weight=self.class_weight,
                balanced=config.balanced_sampling,
                seed=config.seed,
            )
        else:
            self._fit_images(fitted, phase=1, end_epoch=config.epochs)
        self._finish_phase(1)

    def fine_tune_phase(self) -> None:
        """Phase 2: from the best phase-1 weights, train the top backbone layers and the head. Skipped
        without ``fine_tune_layers`` and ``fine_tune_epochs``, once done, or when the time budget is spent."""
        if not self.fine_tunes or 2 in self.state.finished_phases or self.budget.exhausted:
            return
        with self.strategy.scope(), self._stops_say_how_to_resume():
            self._fine_tune_phase()

    def _fine_tune_phase(self) -> None:
        config = self.config
        if self.state.phase != 2:
            self.restore_best()
        set_backbone_trainable(self.model, True, top_n=config.fine_tune_layers)
        self._compile(self.model, config.fine_tune_lr, config.fine_tune_epochs, average_weights=True)
        self._resume_snapshot(self.model, phase=2)
        self._fit_images(
            self.model, phase=2, end_epoch=self.state.phase_end_epoch(1) + config.fine_tune_epochs
        )
        self._finish_phase(2)

    @contextlib.contextmanager
    def _stops_say_how_to_resume(self) -> Iterator[None]:
        """While a phase trains, SIGTERM raises TrainingStopped (it used to end the process without a word)
        and Ctrl-C prints the same advice: the completed epochs are kept, and how to continue from them."""

        def stopped() -> TrainingStopped:
            return TrainingStopped(
                f"Training run {self.config.name!r} was stopped by SIGTERM. {self._resume_hint()}"
            )

        try:
            with raising_on_sigterm(stopped):
                yield
        except KeyboardInterrupt:
            print(
                f"Training run {self.config.name!r} was interrupted. {self._resume_hint()}", file=sys.stderr
            )
            raise

    def _resume_hint(self) -> str:
        """What a stopped run keeps and how to continue it."""
        return (
            f"Its {self.state.epoch} completed epoch(s) are kept in {self.resume_dir}.\n"
            f"Fix: to continue, train again with resume=True and the same run_name {self.config.name!r} "
            "(e.g. skinlesion run 02-train -p resume true), or start afresh with resume=False."
        )

    def restore_best(self) -> None:
        """Load the best epoch's weights (kept in memory, or from its checkpoint after a resume)."""
        if self.best.best_weights is None:
            self.best.best_weights = load_checkpoint(self.state.best_path)[0].get_weights()
        self.model.set_weights(self.best.best_weights)

    def _compile(self, fitted: keras.Model, lr: float, epochs: int, *, average_weights: bool) -> None:
        """Compile with Adam; ``average_weights`` adds the weight EMA when ``ema_momentum`` is set."""
        momentum = self.config.ema_momentum if average_weights else None
        optimizer = keras.optimizers.Adam(
            self._learning_rate(lr, epochs), use_ema=momentum is not None, ema_momentum=momentum or 0.99
        )
        fitted.compile(
            optimizer=optimizer,
            loss=self.loss,
            metrics=[training_metric(self.config.metric, len(TASK_CLASSES[self.config.task]))],
        )

    def _learning_rate(
        self, lr: float, epochs: int
    ) -> float | keras.optimizers.schedules.LearningRateSchedule:
        """``lr`` itself, or its per-step warm-up and cosine decay over a phase of ``epochs`` epochs."""
        if self.config.lr_schedule != "cosine":
            return lr
        steps = math.ceil(len(self.frames["train"]) / self.config.batch_size)
        if epochs == 1:
            return keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.01)
        return keras.optimizers.schedules.CosineDecay(
            lr / 10, (epochs - 1) * steps, alpha=0.01, warmup_target=lr, warmup_steps=steps
        )

    def _resume_snapshot(self, fitted: keras.Model, phase: int) -> None:
        """On resume inside ``phase``, restore the last epoch's weights and optimizer state."""
        if self.state.snapshot is not None and self.state.phase == phase:
            restore_snapshot(self.resume_dir, self.state, self.model, fitted)

    def _train_dataset(self) -> tf.data.Dataset:
        config = self.config
        return make_dataset(
            self.frames["train"],
            task=config.task,
            image_size=config.input_size,
            batch_size=config.batch_size,
            training=True,
            augment=config.augment,
            augment_mode=config.augment_mode,
            balanced=config.balanced_sampling,
            seed=config.seed,
            images=self._decoded("train"),
            targets=self.targets,
            mixup_alpha=config.mixup_alpha,
        )

    def _fit_images(self, fitted: keras.Model, *, phase: int, end_epoch: int) -> None:
        config = self.config
        train = self._train_dataset()
        val = make_dataset(
            self.frames["val"],
            task=config.task,
            image_size=config.input_size,
            batch_size=config.batch_size,
            images=self._decoded("val"),
        )
        monitor = ValidationMetric(val, self.labels["val"], metric=config.metric, loss=fitted.loss)
        fitted.fit(
            train,
            epochs=end_epoch,
            initial_epoch=self.state.epoch,
            callbacks=[*self._weight_average_swap(fitted), monitor, *self._callbacks(phase)],
            class_weight=self.class_weight,
            shuffle=False,
            verbose=0,
        )

    @staticmethod
    def _weight_average_swap(fitted: keras.Model) -> list[keras.callbacks.Callback]:
        """When the optimizer averages weights, the callback that puts the average in the model at each
        epoch end, before anything validates or saves it (and the training weights back at the next start)."""
        return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if fitted.optimizer.use_ema else []

    def _decoded(self, partition: str) -> np.ndarray:
        """The partition's images decoded once (uint8) and kept in memory for every epoch and phase."""
        if partition not in self._images:
            self._images[partition] = load_image_array(
                self.frames[partition]["image_path"], self.config.input_size
            )
        return self._images[partition]

    def _callbacks(self, phase: int) -> list[keras.callbacks.Callback]:
        """Everything after ValidationMetric, in the order that lets each read what the previous wrote."""
        config, monitor = self.config, self.config.monitored
        callbacks = [RecordHistory(self.state, phase), self.best]
        if not config.keeps_last_epoch:
            stopping = keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.patience)
            callbacks.append(stopping)
        if config.lr_schedule == "plateau" and not config.keeps_last_epoch:
            patience = max(1, config.patience // 2)
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor=monitor, mode="max", factor=0.5, patience=patience, min_lr=1e-7
                )
            )
        callbacks.append(keras.callbacks.CSVLogger(str(self._log_file()), append=True))
        if config.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(self.run_dir / "tensorboard")))
        callbacks += [
            ResumeCheckpoint(self.state, self.resume_dir, model_to_save=self.model),
            EpochProgress(f"{config.name} phase {phase}"),
            self.budget,
        ]
        return callbacks + self.extra_callbacks

    def _log_file(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return self.run_dir / "history.csv"

    def _finish_phase(self, phase: int) -> None:
        if self.state.best_path is None:
            raise SkinLesionError(f"phase {phase} of run {self.config.name!r} finished without any epoch")
        self.state.finished_phases.append(phase)
        self.state.save(self.resume_dir)


class TimeBudget(keras.callbacks.Callback):
    """Stop training after the epoch whose successor would end past ``seconds`` from this callback's creation
    (estimated by the last epoch's duration); ``exhausted`` then stays True, and ``cut_a_phase`` when epochs
    of that ``fit`` were left. None: no limit."""

    def __init__(self, seconds: float | None):
        super().__init__()
        self.deadline = None if seconds is None else time.perf_counter() + seconds
        self.exhausted = False
        self.cut_a_phase = False
        self.epoch_started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if self.deadline is not None and now + (now - self.epoch_started) > self.deadline:
            self.exhausted = True
            self.cut_a_phase = epoch + 1 < self.params["epochs"]
            self.model.stop_training = True
            print(f"Time budget reached after epoch {epoch + 1}: stopping, keeping the best checkpoint")


@contextlib.contextmanager
def raising_on_sigterm(error: Callable[[], BaseException]) -> Iterator[None]:
    """While the block runs, SIGTERM raises ``error()`` in it (by default SIGTERM ends the process without a
    word or any clean-up); nothing changes outside the main thread, which alone receives signals."""

    def handler(signum: int, frame: object) -> None:
        raise error()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _check_resumable(state: RunState, config: TrainConfig, resume_dir: Path) -> None:
    """Refuse to resume a run whose network differs from the saved one."""
    current = config.to_params()
    defaults = TrainConfig().to_params()  # what a run saved before a parameter existed had
    changed = [key for key in RESUME_PARAMS if state.params.get(key, defaults[key]) != current[key]]
    if changed:
        raise SkinLesionError(
            f"Cannot resume run {config.name!r}: {', '.join(changed)} differ from the interrupted run "
            f"({resume_dir}).\nFix: use the same parameters, another run_name, or resume=False."
        )


def set_seed(seed: int, *, deterministic_ops: bool = False) -> None:
    """Seed Python's ``random``, NumPy and TensorFlow (via ``keras.utils.set_random_seed``) with ``seed``.

    ``deterministic_ops=True`` also calls ``tf.config.experimental.enable_op_determinism()``: bit-identical
    reruns even on GPU, at some speed cost; it is process-wide and cannot be switched off again.
    """
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def distribution_strategy() -> tf.distribute.Strategy:
    """A ``MirroredStrategy`` over all visible GPUs when there are several, else the default strategy."""
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
