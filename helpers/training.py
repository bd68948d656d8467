"""Train a classifier in up to two phases, checkpoint its best epoch, and resume interrupted runs.

Phase 1 trains the head on the frozen backbone (from cached features when ``cache_features`` and no
augmentation; from-scratch CNNs train end to end instead); phase 2 (``fine_tune_layers > 0``) unfreezes the
top backbone layers (BatchNorm stays frozen) at ``fine_tune_lr``. Notebook use::

    config = TrainConfig.from_params(params)
    result = train(config, frame, split_file=split_path)
    plot_training_curves(result.history, title="MobileNetV2, 7 classes", monitored=config.monitored)
"""

from __future__ import annotations

import difflib
import math
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers import config as project_config
from helpers.callbacks import (
    MONITORED_METRICS,
    BestCheckpoint,
    EpochProgress,
    RecordHistory,
    ResumeCheckpoint,
    RunState,
    ValidationMetric,
    restore_snapshot,
    training_metric,
)
from helpers.checkpoints import load_checkpoint, next_version
from helpers.class_weights import CLASS_WEIGHT_MODES, class_weights
from helpers.errors import DataError, SkinLesionError
from helpers.feature_cache import cached_features, feature_cache_dir, train_head_on_features
from helpers.models import ARCHITECTURES, TASKS, build_model, head_model, set_backbone_trainable
from helpers.pipeline import AUGMENT_MODES, frame_labels, load_image_array, make_dataset
from helpers.reproducibility import distribution_strategy, set_seed

NUM_CLASSES: dict[str, int] = {"multiclass": len(project_config.CLASS_NAMES), "binary": 2}
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "multiclass": project_config.CLASS_NAMES,
    "binary": project_config.BINARY_CLASS_NAMES,
}
_NUMBER_TYPES = {"float": float, "int": int, "int | None": int, "float | None": float}
LR_SCHEDULES: tuple[str, ...] = ("plateau", "cosine")
"""``plateau``: halve the LR when the monitored metric stalls; ``cosine``: per step, warm each phase's LR up
from a tenth over its first epoch, then decay it to 1% by its last (no plateau reduction)."""
_MODEL_PARAMS = ("task", "arch", "input_size", "weights", "dropout", "dense_units", "batch_norm")
"""Parameters a resumed run must share with the interrupted one (they define the network)."""


@dataclass
class TrainConfig:
    """Every knob of one training run; ``from_params`` builds it from a notebook/YAML parameter dict.

    Paths left None default to ``models/``, ``runs/training/`` and ``data/cache/features/``;
    ``monitor_metric`` None means balanced accuracy (multiclass) or ROC-AUC (binary; or "pr_auc").
    ``max_images`` caps each of the train and val partitions (stratified, seeded) for quick runs.
    ``time_budget_s`` stops training cleanly (keeping the best checkpoint) before an epoch that would end
    past that many seconds after the start, judged by the last epoch's duration; phase 2 then is skipped.
    A seed fixes initial weights, shuffling, sampling and augmentation; ``deterministic=True`` also makes
    TensorFlow ops deterministic (process-wide, slower), which bit-identical reruns with ``augment`` need
    because the pipeline's parallel augmentation may hand over batches in a different order.
    ``ema_momentum`` keeps an exponential moving average of the weights in the fine-tuning phase (and for
    the from-scratch CNNs; not for a new head, whose average would lag behind its fast start); validation,
    selection and checkpoints then use the averaged weights, which smooths the epoch-to-epoch noise of a
    small validation set. A resumed run continues from them.
    """

    task: str = "multiclass"
    arch: str = "mobilenetv2"
    input_size: tuple[int, int] = (150, 200)
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    weights: str | None = "imagenet"
    dropout: float = 0.3
    dense_units: int | None = None
    batch_norm: bool = False
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 0
    fine_tune_lr: float = 1e-5
    class_weighting: str = "balanced"
    balanced_sampling: bool = False
    augment: bool = False
    augment_mode: str = "full"
    lr_schedule: str = "plateau"
    time_budget_s: float | None = None
    label_smoothing: float = 0.0
    ema_momentum: float | None = None
    monitor_metric: str | None = None
    seed: int = 42
    patience: int = 5
    run_name: str | None = None
    version: int | None = None
    models_dir: str | None = None
    runs_dir: str | None = None
    cache_dir: str | None = None
    resume: bool = False
    tensorboard: bool = False
    cache_features: bool = True
    max_images: int | None = None
    deterministic: bool = False

    def __post_init__(self) -> None:
        self._coerce_numbers()
        problems = self._problems()
        if problems:
            raise SkinLesionError("Invalid training config:\n- " + "\n- ".join(problems))

    def _coerce_numbers(self) -> None:
        """Accept numbers written as text (YAML reads ``1e-3`` as a string) and input_size as a list."""
        try:
            self.input_size = tuple(int(side) for side in self.input_size)
            for field in fields(self):
                convert = _NUMBER_TYPES.get(str(field.type))
                if convert is not None and isinstance(getattr(self, field.name), str):
                    setattr(self, field.name, convert(getattr(self, field.name)))
        except (TypeError, ValueError) as error:
            raise SkinLesionError(
                f"Invalid training config: a numeric parameter is not a number ({error})"
            ) from error

    def _problems(self) -> list[str]:
        checks = [
            (self.task in TASKS, f"task {self.task!r} is not one of {TASKS}"),
            (self.arch in ARCHITECTURES, f"arch {self.arch!r} is not one of {sorted(ARCHITECTURES)}"),
            (len(self.input_size) == 2, f"input_size must be (height, width), got {self.input_size}"),
            (self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be >= 1"),
            (self.lr > 0 and self.fine_tune_lr > 0, "lr and fine_tune_lr must be > 0"),
            (self.fine_tune_layers >= 0 and self.fine_tune_epochs >= 0, "fine_tune_* must be >= 0"),
            (
                self.class_weighting in CLASS_WEIGHT_MODES,
                f"class_weighting must be one of {CLASS_WEIGHT_MODES}",
            ),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (
                self.ema_momentum is None or 0 < self.ema_momentum < 1,
                "ema_momentum must be None or in (0, 1)",
            ),
            (self.augment_mode in AUGMENT_MODES, f"augment_mode must be one of {AUGMENT_MODES}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (self.time_budget_s is None or self.time_budget_s > 0, "time_budget_s must be None or > 0"),
            (self.patience >= 1, "patience must be >= 1"),
            (self.max_images is None or self.max_images >= 2, "max_images must be None or >= 2"),
            (
                self.monitor_metric is None or self.monitor_metric in MONITORED_METRICS.get(self.task, ()),
                f"monitor_metric for {self.task!r} must be one of {MONITORED_METRICS.get(self.task)}",
            ),
            (
                not (self.balanced_sampling and self.class_weighting != "none"),
                "balanced_sampling and class_weighting both correct imbalance: set class_weighting='none'",
            ),
        ]
        return [message for ok, message in checks if not ok]

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> TrainConfig:
        """Build a config from a parameter dict, rejecting unknown keys with the closest valid names."""
        known = {f.name for f in fields(cls)}
        unknown = [key for key in params if key not in known]
        if unknown:
            hints = [_with_suggestion(key, known) for key in unknown]
            raise SkinLesionError(
                f"Unknown training parameter(s): {', '.join(hints)}\n"
                f"Valid parameters: {', '.join(sorted(known))}"
            )
        return cls(**params)

    def to_params(self) -> dict:
        """The config as a plain JSON-friendly dict (for checkpoint sidecars and the tracking table)."""
        params = asdict(self)
        params["input_size"] = list(self.input_size)
        return params

    @property
    def metric(self) -> str:
        """The monitored metric's base name, e.g. ``balanced_accuracy``."""
        return self.monitor_metric or MONITORED_METRICS[self.task][0]

    @property
    def monitored(self) -> str:
        """The logs key that checkpoints, early stopping and LR reduction follow, e.g. ``val_roc_auc``."""
        return f"val_{self.metric}"

    @property
    def name(self) -> str:
        """The run name: ``run_name`` or ``{arch}_{task}`` (stable, so ``resume=True`` finds it)."""
        return self.run_name or f"{self.arch}_{self.task}"

    @property
    def from_scratch(self) -> bool:
        """True for the small CNNs without pretrained weights: they train end to end in one phase."""
        return ARCHITECTURES[self.arch].application is None

    def path(self, kind: str) -> Path:
        """The ``models``, ``runs`` or ``cache`` folder of this run (config value or project default)."""
        defaults = {
            "models": (self.models_dir, project_config.MODELS_DIR),
            "runs": (self.runs_dir, project_config.RUNS_DIR / "training"),
            "cache": (self.cache_dir, feature_cache_dir()),
        }
        value, default = defaults[kind]
        return Path(value) if value is not None else default


@dataclass
class TrainResult:
    """What :func:`train` returns: the model with its best weights and how it got there.

    ``images_per_s`` is training images processed (epochs x train images) per second of ``wall_time_s``;
    ``history`` holds per-epoch ``epoch``, ``phase``, ``learning_rate``, ``loss``, ``val_loss``, the
    monitored metric on the training batches and ``val_{metric}`` on the whole validation set.
    """

    model: keras.Model
    checkpoint_path: Path
    history: dict[str, list]
    monitored: str
    best_metric: float
    run_name: str
    version: int
    wall_time_s: float
    images_per_s: float


def task_loss(task: str, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Cross-entropy on the pipeline's labels: sparse (multiclass), binary, or with label smoothing."""
    if task == "binary":
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    if label_smoothing == 0:
        return keras.losses.SparseCategoricalCrossentropy()
    return SmoothedSparseCategoricalCrossentropy(NUM_CLASSES[task], label_smoothing)


@keras.saving.register_keras_serializable(package="skinlesion")
class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """CategoricalCrossentropy with label smoothing on integer labels (one-hot encoded inside the loss), so
    datasets, class weights and metrics keep the same integer labels with or without smoothing."""

    def __init__(
        self,
        num_classes: int = 7,
        label_smoothing: float = 0.1,
        name: str = "smoothed_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        one_hot = keras.ops.one_hot(
            keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), self.num_classes
        )
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
        }


def training_frames(frame: pd.DataFrame, config: TrainConfig) -> dict[str, pd.DataFrame]:
    """The ``train`` and ``val`` partitions of ``frame``, each capped at ``config.max_images``, stratified."""
    if "partition" not in frame.columns:
        raise DataError("the frame has no 'partition' column", fix="assign a split with helpers.splits first")
    parts = {}
    for name in ("train", "val"):
        part = frame[frame["partition"] == name]
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

    ``resume=True`` continues an interrupted run of the same ``run_name`` from its last completed epoch.
    ``callbacks`` run after the built-in ones (e.g. to inspect or interrupt training).
    """
    started = time.perf_counter()
    frames = training_frames(frame, config)
    set_seed(config.seed, deterministic_ops=config.deterministic)
    with distribution_strategy().scope():
        run = _Run(config, frames, split_file, data_description, callbacks)
        first_epoch = run.state.epoch
        if 1 not in run.state.finished_phases:
            run.head_phase()
        if run.fine_tunes and 2 not in run.state.finished_phases and not run.budget.exhausted:
            run.fine_tune_phase()
        run.restore_best()
    shutil.rmtree(run.resume_dir, ignore_errors=True)
    wall_time = time.perf_counter() - started
    return TrainResult(
        model=run.model,
        checkpoint_path=Path(str(run.state.best_path)),
        history=run.state.history,
        monitored=config.monitored,
        best_metric=float(run.state.best_metric),
        run_name=config.name,
        version=run.state.version,
        wall_time_s=wall_time,
        images_per_s=len(frames["train"]) * (run.state.epoch - first_epoch) / wall_time,
    )


def train_sweep(
    config: TrainConfig,
    frame: pd.DataFrame,
    lrs: Sequence[float],
    *,
    split_file: str | Path | None = None,
    data_description: str = "",
) -> dict[float, TrainResult]:
    """One :func:`train` run per phase-1 learning rate (run names ``{name}_lr{lr:g}``, one version each);
    with ``cache_features`` the backbone embeddings are computed by the first run and reused by the rest."""
    results = {}
    for lr in tqdm(lrs, desc="Learning-rate sweep", unit="run"):
        run_config = replace(config, lr=lr, run_name=f"{config.name}_lr{lr:g}", version=None)
        results[lr] = train(run_config, frame, split_file=split_file, data_description=data_description)
    return results


class _Run:
    """One training run's shared pieces: model, data, resumable state and the callbacks of every phase."""

    def __init__(
        self,
        config: TrainConfig,
        frames: dict[str, pd.DataFrame],
        split_file: str | Path | None,
        data_description: str,
        extra_callbacks: Sequence[keras.callbacks.Callback],
    ):
        self.config = config
        self.frames = frames
        self.split_file = split_file
        self.extra_callbacks = list(extra_callbacks)
        self.resume_dir = config.path("models") / ".resume" / config.name
        self.run_dir = config.path("runs") / config.name
        self.budget = TimeBudget(config.time_budget_s)
        self.state = self._initial_state()
        self.model = build_model(
            config.arch,
            task=config.task,
            input_size=config.input_size,
            weights=config.weights,
            dropout=config.dropout,
            dense_units=config.dense_units,
            batch_norm=config.batch_norm,
        )
        self.labels = {name: frame_labels(part, config.task) for name, part in frames.items()}
        self.class_weight = class_weights(
            self.labels["train"], config.class_weighting, NUM_CLASSES[config.task]
        )
        self.best = BestCheckpoint(
            self.state,
            monitor=config.monitored,
            models_dir=config.path("models"),
            arch=config.arch,
            metadata=self._metadata(data_description),
            model_to_save=self.model,
        )
        self._images: dict[str, np.ndarray] = {}

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
            "class_names": list(CLASS_NAMES[config.task]),
            "input_size": list(config.input_size),
            "params": config.to_params(),
            "split_file": None if self.split_file is None else str(Path(self.split_file).resolve()),
            "data_description": data_description,
            "train_images": len(self.frames["train"]),
            "val_images": len(self.frames["val"]),
        }

    def head_phase(self) -> None:
        """Phase 1: the head on the frozen backbone (cached features when possible), or end to end."""
        config = self.config
        use_cache = config.cache_features and not config.augment and not config.from_scratch
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
        """Phase 2: from the best phase-1 weights, train the top backbone layers and the head."""
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
            loss=task_loss(self.config.task, self.config.label_smoothing),
            metrics=[training_metric(self.config.metric, NUM_CLASSES[self.config.task])],
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

    def _fit_images(self, fitted: keras.Model, *, phase: int, end_epoch: int) -> None:
        config = self.config
        train = make_dataset(
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
        )
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
        callbacks = [
            RecordHistory(self.state, phase),
            self.best,
            keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.patience),
        ]
        if config.lr_schedule == "plateau":
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
    (estimated by the last epoch's duration); ``exhausted`` then stays True. None: no limit."""

    def __init__(self, seconds: float | None):
        super().__init__()
        self.deadline = None if seconds is None else time.perf_counter() + seconds
        self.exhausted = False
        self.epoch_started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if self.deadline is not None and now + (now - self.epoch_started) > self.deadline:
            self.exhausted = True
            self.model.stop_training = True
            print(f"Time budget reached after epoch {epoch + 1}: stopping, keeping the best checkpoint")


def _with_suggestion(key: str, known: set[str]) -> str:
    """``'key'``, followed by the closest valid parameter name when one is close."""
    close = difflib.get_close_matches(key, known, n=1)
    return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)


def _check_resumable(state: RunState, config: TrainConfig, resume_dir: Path) -> None:
    """Refuse to resume a run whose network differs from the saved one."""
    current = config.to_params()
    changed = [key for key in _MODEL_PARAMS if state.params.get(key) != current[key]]
    if changed:
        raise SkinLesionError(
            f"Cannot resume run {config.name!r}: {', '.join(changed)} differ from the interrupted run "
            f"({resume_dir}).\nFix: use the same parameters, another run_name, or resume=False."
        )
