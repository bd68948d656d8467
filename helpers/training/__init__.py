"""Training: the settings of a run (``settings``), the run itself in visible phases (``run``), what it
minimises (``losses``), its callbacks (validation metric, best checkpoint, resume, progress), the cached
backbone features of frozen-backbone runs, the soft targets of a teacher (``distill``) and an ensemble's
members trained within one budget, in streams at the same time (``streams``). Imports ``core``, ``data`` and
``models``."""

from helpers.training.run import TrainingRun, TrainResult, train
from helpers.training.settings import TrainConfig, config_from_notebook, learning_rates

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingRun",
    "config_from_notebook",
    "learning_rates",
    "train",
]
