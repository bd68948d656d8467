"""Training an ensemble's members within one budget, in turn or in streams (the concurrent path, with real
processes, is exercised by tests/test_bench.py's ensemble release)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.core.errors import SkinLesionError
from helpers.data.source import DataSource
from helpers.training import streams
from helpers.training.streams import BudgetSpentError, MemberPlan, StreamError, train_members, with_versions

SOURCE = DataSource(root=Path("/data"), is_demo=True, description="demo")


def _fake_train(seconds: float):
    """A stand-in for ``train`` that takes ``seconds`` and names the run it was given."""

    def fake(settings, frame, **kwargs):
        time.sleep(seconds)
        return SimpleNamespace(run_name=settings.run_name, time_budget_s=settings.time_budget_s)

    return fake


def test_members_of_one_stream_train_in_its_order_and_come_back_in_member_order(monkeypatch) -> None:
    monkeypatch.setattr(streams, "train", _fake_train(0.05))
    plans = [MemberPlan({}, "first"), MemberPlan({}, "second")]
    first, second = train_members(plans, [[2, 1]], 60.0, SOURCE, None, Path("split.csv"))
    assert "first" in first.result.run_name and "second" in second.result.run_name
    assert second.started_after_s < first.started_after_s  # member 2 was trained first, as listed
    assert first.started_after_s >= second.ended_after_s >= 0.05
    # each member's budget is what the common one had left when it started
    assert first.result.time_budget_s == 60.0 - first.started_after_s


def test_a_member_that_finds_the_budget_spent_is_refused_with_the_members_kept(monkeypatch) -> None:
    monkeypatch.setattr(streams, "train", _fake_train(0.05))
    plans = [MemberPlan({}, "a"), MemberPlan({}, "b")]
    with pytest.raises(BudgetSpentError, match="before member 2 started") as stopped:
        train_members(plans, [], 0.03, SOURCE, None, Path("split.csv"))
    assert "(stream 1; members it trained: 1; checkpoints kept in" in str(stopped.value)
    assert "Fix: raise --budget-minutes" in str(stopped.value)


def _light_plan(models_dir: Path, **training: object) -> MemberPlan:
    return MemberPlan({"arch": "light_cnn", "weights": None, "models_dir": str(models_dir), **training}, "m")


def test_members_of_one_backbone_get_their_own_versions_before_any_trains(tmp_path: Path) -> None:
    (tmp_path / "light_cnn_v3_01_0.500.h5").touch()  # versions 1-3 are taken in this folder
    plans = [_light_plan(tmp_path), _light_plan(tmp_path, version=5), _light_plan(tmp_path)]
    versions = [plan.training["version"] for plan in with_versions(plans, SOURCE)]
    assert versions == [4, 5, 6]  # the explicit 5 kept and skipped
    with pytest.raises(SkinLesionError, match="light_cnn version 7 .* file names would collide"):
        with_versions([_light_plan(tmp_path, version=7), _light_plan(tmp_path, version=7)], SOURCE)


def test_every_failed_stream_is_named_together_after_the_others_end(tmp_path: Path) -> None:
    """Two streams in two processes, each failing at once (no images to train on): one error naming both."""
    plans = [_light_plan(tmp_path), _light_plan(tmp_path)]
    with pytest.raises(StreamError) as failed:
        train_members(plans, [[1], [2]], 60.0, SOURCE, None, tmp_path / "split.csv")
    message = str(failed.value)
    assert "stream 1: " in message and "stream 2: " in message and "Fix:" in message
