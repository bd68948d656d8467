"""Models: building flat, self-contained classifiers (``build``), reading and writing them as checkpoint
files with a JSON sidecar (``checkpoints``), averaging several as one (``ensemble``), opening Keras 2 files
(``legacy``, ``adopt``) and running them on images (``predict``). Imports ``core`` and ``data``."""

from helpers.models.build import ARCHITECTURES, build_model
from helpers.models.checkpoints import (
    best_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)

__all__ = [
    "ARCHITECTURES",
    "best_checkpoint",
    "build_model",
    "list_checkpoints",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
]
