"""Training an ensemble's members within one budget, in turn or in streams (the concurrent path, with real
processes, is exercised by tests/test_bench.py's ensemble release)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.data.source import DataSource
from helpers.training import streams
from helpers.training.streams import BudgetSpentError, MemberPlan, train_members

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
    assert first.result.time_budget_s == pytest.approx(60.0 - first.started_after_s, abs=0.06)


def test_a_member_that_finds_the_budget_spent_is_refused_with_the_members_kept(monkeypatch) -> None:
    monkeypatch.setattr(streams, "train", _fake_train(0.05))
    plans = [MemberPlan({}, "a"), MemberPlan({}, "b")]
    with pytest.raises(BudgetSpentError, match="before member 2 started") as stopped:
        train_members(plans, [], 0.03, SOURCE, None, Path("split.csv"))
    assert "members trained in its stream: 1" in str(stopped.value)
    assert "Fix: raise --budget-minutes" in str(stopped.value)
