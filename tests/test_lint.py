"""The code base passes ``ruff check`` (run as part of the test command so CI enforces it)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from helpers.core import config


def test_ruff_check_passes() -> None:
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(config.PROJECT_ROOT / ".venv" / "bin"))
    if ruff is None:
        pytest.fail(f"ruff is not installed in {sys.prefix}: run `uv sync` (it is in the dev group)")
    result = subprocess.run([ruff, "check", "."], cwd=config.PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
