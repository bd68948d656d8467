"""Staging folders beside a target: renamed into place on success, never left behind; the temporaries of
killed writers are told from writes in progress and deleted."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import leave_killed_write

from helpers.core.atomic import atomic_path, remove_stale_temporaries, staging_directory


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


def test_temporaries_of_killed_writers_are_deleted_and_writes_in_progress_kept(tmp_path: Path) -> None:
    stale = [leave_killed_write(tmp_path / "model.keras"), leave_killed_write(tmp_path / "1", folder=True)]
    assert all(path.name.startswith((".model.keras.tmp", ".1.tmp")) for path in stale)
    (tmp_path / ".other.tmp-notes").write_text("not a temporary of an atomic write")
    with atomic_path(tmp_path / "live.txt") as live:
        live.write_text("in progress")
        assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
        assert sorted(path.name for path in tmp_path.iterdir()) == sorted([".other.tmp-notes", live.name])
    assert (tmp_path / "live.txt").read_text() == "in progress"
    assert remove_stale_temporaries(tmp_path / "missing") == []
