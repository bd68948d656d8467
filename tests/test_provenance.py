"""helpers.core.provenance: the git commit recorded with every result, dirty only when code changed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers.core import provenance


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with one committed code file and a committed Tracking.md, as CODE_ROOT."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "Tracking.md").write_text("# Tracking\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    monkeypatch.setattr(provenance, "CODE_ROOT", tmp_path)
    return tmp_path


def test_this_checkout_has_a_short_commit() -> None:
    assert re.fullmatch(r"[0-9a-f]{4,40}(\+dirty)?", provenance.git_commit())


def test_clean_then_dirty_when_code_changes(repository: Path) -> None:
    assert re.fullmatch(r"[0-9a-f]{4,40}", provenance.git_commit())
    (repository / "Tracking.md").write_text("# Tracking\n| a row |\n")  # a run's output: still clean
    assert not provenance.git_commit().endswith("+dirty")
    (repository / "code.py").write_text("x = 2\n")
    assert provenance.git_commit().endswith("+dirty")


def test_unknown_outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "CODE_ROOT", tmp_path)
    assert provenance.git_commit() == "unknown"


def test_package_versions() -> None:
    assert provenance.package_version("numpy")
    assert provenance.package_version("no-such-package-here") is None
