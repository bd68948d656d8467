"""The settings of one training run (:class:`TrainConfig`), and how notebooks 02 and 03 make them.

``TrainConfig`` is the one list of training parameters: notebooks 02 and 03 declare (a subset of) its field
names in their parameters cells and hand their namespace to :func:`config_from_notebook`, so the two
notebooks, ``configs/*.yaml`` and ``bench/accuracy.py`` can never drift apart. Runs on the synthetic demo
data save their checkpoints in ``models/demo/``, so the best checkpoint of ``models/`` (what notebooks 04
and 05 take by default) is never one trained on synthetic images.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import keras

from helpers.core import config as project_config
from helpers.core.config import TASKS
from helpers.core.errors import SkinLesionError
from helpers.data.augment import AUGMENT_MODES
from helpers.data.source import DataSource
from helpers.data.splits import PARTITIONS
from helpers.models.build import ARCHITECTURES, build_model
from helpers.training.callbacks import MONITORED_METRICS
from helpers.training.distill import DISTILL_WEIGHT_RULE, valid_distill_weight
from helpers.training.losses import CLASS_WEIGHT_MODES, task_loss

_NUMBER_TYPES = {"float": float, "int": int, "int | None": int, "float | None": float}
LR_SCHEDULES: tuple[str, ...] = ("plateau", "cosine")
"""``plateau``: halve the LR when the monitored metric stalls; ``cosine``: per step, warm each phase's LR up
from a tenth over its first epoch, then decay it to 1% by its last (no plateau reduction)."""
RESUME_PARAMS = (
    "task",
    "arch",
    "input_size",
    "weights",
    "dropout",
    "dense_units",
    "batch_norm",
    "distill_from",
    "distill_weight",
    "mixup_alpha",
)
"""Parameters a resumed run must share with the interrupted one: they define the network and its targets."""
NOTEBOOK_NAMES: dict[str, str] = {"img_size": "input_size"}
"""Notebook parameter names that differ from the TrainConfig field they set."""
TRACKED_PARAMS = (
    "task",
    "arch",
    "input_size",
    "epochs",
    "lr",
    "fine_tune_layers",
    "fine_tune_epochs",
    "fine_tune_lr",
    "class_weighting",
    "augment",
    "augment_mode",
    "ema_momentum",
    "seed",
    "distill_from",
    "distill_weight",
    "mixup_alpha",
)
"""The settings a Tracking.md row shows for a training run."""


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
    ``train_partitions`` adds partitions to the training data, e.g. ``["train", "val", "test"]`` for a model
    released after its recipe was validated: with ``val`` among them the validation score is no longer held
    out, so the LAST epoch is kept (no best-epoch selection, no early stopping) and the sidecar records
    ``trained_on``; such checkpoints are never "the best" of a folder and are evaluated externally only.
    ``ema_momentum`` keeps an exponential moving average of the weights in the fine-tuning phase (and for
    the from-scratch CNNs; not for a new head, whose average would lag behind its fast start); validation,
    selection and checkpoints then use the averaged weights, which smooths the epoch-to-epoch noise of a
    small validation set. A resumed run continues from them.
    ``distill_from`` names a teacher checkpoint (e.g. an ensemble, slower and larger than one model; a
    relative path from the project root): every training image's target becomes ``(1 - distill_weight) *
    one_hot(label) + distill_weight * teacher probabilities`` (:mod:`helpers.training.distill`; multiclass
    only, and the head then trains on images, not cached features).
    ``mixup_alpha > 0`` blends each training batch's images and targets in pairs, the weight of each
    image's own drawn from ``Beta(alpha, alpha)`` folded to at least 0.5 (:func:`helpers.data.augment.mixup`;
    the head then trains on images too).
    """

    task: str = "multiclass"
    arch: str = "mobilenetv2"
    input_size: tuple[int, int] = project_config.DEFAULT_IMAGE_SIZE
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
    train_partitions: tuple[str, ...] = ("train",)
    distill_from: str | None = None
    distill_weight: float = 0.4
    mixup_alpha: float = 0.0

    def __post_init__(self) -> None:
        self._coerce_numbers()
        problems = self._problems()
        if problems:
            raise SkinLesionError("Invalid training config:\n- " + "\n- ".join(problems))

    def _coerce_numbers(self) -> None:
        """Accept numbers written as text (YAML reads ``1e-3`` as a string) and input_size as a list."""
        try:
            self.input_size = tuple(int(side) for side in self.input_size)
            self.train_partitions = tuple(self.train_partitions)
            for field in fields(self):
                kind = _NUMBER_TYPES.get(str(field.type))
                if kind is not None and isinstance(getattr(self, field.name), str):
                    setattr(self, field.name, _number(getattr(self, field.name), kind))
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
            (
                "train" in self.train_partitions and set(self.train_partitions) <= set(PARTITIONS),
                f"train_partitions must include 'train' and name only {PARTITIONS}",
            ),
            (self.max_images is None or self.max_images >= 2, "max_images must be None or >= 2"),
            (valid_distill_weight(self.distill_weight), DISTILL_WEIGHT_RULE),
            (
                self.distill_from is None or self.task == "multiclass",
                "distill_from needs task 'multiclass' (the teacher's class probabilities are the targets)",
            ),
            (self.mixup_alpha >= 0, "mixup_alpha must be >= 0 (0: no mixup)"),
            (
                not (self.mixup_alpha and self.distill_from is not None),
                "mixup_alpha and distill_from together could let a partner's class outweigh the label: "
                "use one of them",
            ),
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

    def build_model(self) -> keras.Model:
        """The network these settings describe (:func:`helpers.models.build_model`), backbone frozen."""
        return build_model(
            self.arch,
            task=self.task,
            input_size=self.input_size,
            weights=self.weights,
            dropout=self.dropout,
            dense_units=self.dense_units,
            batch_norm=self.batch_norm,
        )

    def loss(self) -> keras.losses.Loss:
        """The loss these settings describe: the task's cross-entropy, label-smoothed if asked, on soft
        targets when distilling or mixing."""
        return task_loss(self.task, self.label_smoothing, soft_targets=self.soft_targets)

    @property
    def soft_targets(self) -> bool:
        """True when training targets are class probabilities rather than labels (distillation, mixup)."""
        return self.distill_from is not None or self.mixup_alpha > 0

    @property
    def keeps_last_epoch(self) -> bool:
        """True when the validation partition is trained on: its score cannot select an epoch then."""
        return "val" in self.train_partitions

    def for_learning_rate(self, lr: float) -> TrainConfig:
        """These settings with phase-1 learning rate ``lr``, as one run of a sweep: run name
        ``{name}_lr{lr:g}``, its own checkpoint version."""
        return replace(self, lr=lr, run_name=f"{self.name}_lr{lr:g}", version=None)

    def tracked_params(self) -> dict:
        """The key settings for a Tracking.md row (:data:`TRACKED_PARAMS`)."""
        params = self.to_params()
        return {name: params[name] for name in TRACKED_PARAMS}

    def to_params(self) -> dict:
        """The config as a plain JSON-friendly dict (for checkpoint sidecars and the tracking table)."""
        params = asdict(self)
        params["input_size"] = list(self.input_size)
        params["train_partitions"] = list(self.train_partitions)
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
            "cache": (self.cache_dir, project_config.FEATURE_CACHE_DIR),
        }
        value, default = defaults[kind]
        return Path(value) if value is not None else default


FIELD_NAMES = frozenset(field.name for field in fields(TrainConfig))
"""The TrainConfig fields: the names a parameter dict may set."""
TRAINING_NAMES = FIELD_NAMES | set(NOTEBOOK_NAMES)
"""Every name that sets a TrainConfig field, its notebook spellings included: what an override may name."""


def _with_suggestion(key: str, known: set[str]) -> str:
    """``'key'``, followed by the closest valid parameter name when one is close."""
    close = difflib.get_close_matches(key, known, n=1)
    return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)


def models_dir(is_demo: bool) -> Path:
    """Where a run's checkpoints go: ``models/``, or ``models/demo/`` for runs on the synthetic data."""
    return project_config.MODELS_DIR / "demo" if is_demo else project_config.MODELS_DIR


def config_from_notebook(
    namespace: Mapping[str, object], *, label: str, source: DataSource, **overrides: object
) -> TrainConfig:
    """The TrainConfig of a notebook's parameters: every name of ``namespace`` (the notebook's ``globals()``)
    that is a TrainConfig field (``img_size`` sets ``input_size``), then ``overrides``.

    ``max_images=0`` means all images, ``$VARIABLES`` in the weights and distill_from paths are expanded
    (configs can name ``${SKINLESION_SHARED}/...``), an empty ``run_name`` means ``{label}_{arch}_{task}``
    (``label`` names the run's outputs, see :func:`helpers.runs.run_label`; stable, so ``resume=True`` finds
    it), and demo data gets its own models folder.
    """
    values = {NOTEBOOK_NAMES.get(name, name): value for name, value in namespace.items()}
    values = {name: value for name, value in values.items() if name in FIELD_NAMES} | overrides
    values["max_images"] = values.get("max_images") or None
    for path_name in ("weights", "distill_from"):
        if isinstance(values.get(path_name), str):
            values[path_name] = os.path.expandvars(values[path_name])
    if not values.get("run_name"):
        arch, task = values.get("arch", TrainConfig.arch), values.get("task", TrainConfig.task)
        values["run_name"] = f"{label}_{arch}_{task}"
    values.setdefault("models_dir", str(models_dir(source.is_demo)))
    return TrainConfig.from_params(values)


def learning_rates(lrs: Sequence[object]) -> list[float]:
    """The sweep's learning rates as distinct positive floats, or a SkinLesionError naming the value."""
    try:
        rates = [_number(lr, float) for lr in lrs]
    except (TypeError, ValueError) as error:
        raise SkinLesionError(f"lrs must be a list of numbers, e.g. [1e-4, 1e-3], got {lrs!r}") from error
    if not rates or min(rates) <= 0 or len(set(rates)) != len(rates):
        raise SkinLesionError(f"lrs must be a non-empty list of distinct positive numbers, got {lrs!r}")
    return rates


def _number(value: object, kind: type) -> int | float:
    """``value`` as ``kind``; numbers written as text are accepted, since PyYAML (YAML 1.1, as papermill's
    ``-y``/``-f`` read parameters) reads ``1e-3`` as the string "1e-3"."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{value!r} is not a number")
    return kind(value)
