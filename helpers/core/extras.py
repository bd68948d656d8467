"""Optional features' dependencies (the ``export`` and ``demo`` extras): import them or say how to install.

The core project runs without them; a feature that needs one imports it here, so a missing package becomes a
:class:`~helpers.core.errors.SkinLesionError` naming the install command instead of a bare ImportError.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from helpers.core.errors import SkinLesionError


class MissingExtraError(SkinLesionError, ImportError):
    """A package of an optional extra (``export``, ``demo``) that is not installed."""


def import_extra(module: str, extra: str) -> ModuleType:
    """Import ``module`` from the optional ``extra``; MissingExtraError with the install command if absent."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{module} is not installed; it comes with the optional '{extra}' dependencies ({error}).\n"
            f"Fix: run `uv sync --extra {extra}`, or start the command with `uv run --extra {extra} ...`."
        ) from error
