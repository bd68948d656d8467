"""Staging folders beside a target: renamed into place on success, never left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.core.atomic import staging_directory


def test_a_finished_folder_is_renamed_onto_the_target(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dataset"
    with staging_directory(target) as staging:
        assert staging.parent == target.parent and staging.name.startswith(".dataset.")
        assert not any(staging.iterdir())
        (staging / "file.txt").write_text("done")
        staging.rename(target)
    assert (target / "file.txt").read_text() == "done"
    assert [path.name for path in target.parent.iterdir()] == ["dataset"]


def test_leftovers_are_removed_after_a_failure_or_when_nothing_is_moved(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="disk full"), staging_directory(tmp_path / "a") as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    with staging_directory(tmp_path / "b") as staging:
        (staging / "unused.txt").write_text("unused")
    assert list(tmp_path.iterdir()) == []
