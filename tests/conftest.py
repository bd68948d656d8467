"""Shared pytest fixtures: where the real data and weights live, and when to skip without them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.core import config


def _shared_or_skip() -> Path:
    shared = config.shared_dir()
    if shared is None:
        if os.environ.get("CI"):
            pytest.fail("SKINLESION_SHARED is not set or missing in CI: .ci/run must export it")
        pytest.skip("real data absent: set SKINLESION_SHARED to the shared folder (../shared) to run this")
    return shared


@pytest.fixture(autouse=True)
def no_release_unless_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no released checkpoint ("no checkpoint yet" stays testable) unless marked ``release``."""
    if request.node.get_closest_marker("release") is None:
        monkeypatch.setattr(config, "RELEASE_DIR", config.PROJECT_ROOT / "models" / "no-release-in-tests")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared folder with real data and weights."""
    return _shared_or_skip()


@pytest.fixture(scope="session")
def ham_root(shared_dir: Path) -> Path:
    """The real HAM10000 copy in the official layout."""
    return shared_dir / "data" / "HAM10000"


@pytest.fixture(scope="session")
def binary_root(shared_dir: Path) -> Path:
    """The folder-per-class malignant-vs-benign set."""
    return shared_dir / "data" / "skin-cancer-malignant-vs-benign"


@pytest.fixture(scope="session")
def keras_home(shared_dir: Path) -> Path:
    """The folder of ImageNet weights to use as KERAS_HOME."""
    return shared_dir / "keras"
