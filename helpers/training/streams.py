"""Train an ensemble's members within one wall-clock budget: in turn in this process, or in streams that train
at the same time, each stream in its own process and its members in turn (one TensorFlow process gains only
about 1.4x from a second CPU core, two processes together more)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from helpers.core.errors import SkinLesionError
from helpers.data.source import DataSource
from helpers.models.checkpoints import next_version
from helpers.training.run import TrainResult, train
from helpers.training.settings import TrainConfig, config_from_notebook


class BudgetSpentError(SkinLesionError):
    """The wall-clock budget ended before a member could start (the members trained so far are kept)."""


@dataclass(frozen=True)
class MemberPlan:
    """One member to train: its training parameters (as notebook 02 takes them) and the label of its files."""

    training: dict[str, object]
    label: str


@dataclass(frozen=True)
class TrainedMember:
    """A trained member: its settings, its result (``model`` None when another process trained it: the
    checkpoint holds the weights), its stream, and when it started and ended (seconds from the start)."""

    settings: TrainConfig
    result: TrainResult
    stream: int
    started_after_s: float
    ended_after_s: float


def train_members(
    plans: Sequence[MemberPlan],
    streams: Sequence[Sequence[int]],
    budget_s: float,
    source: DataSource,
    frame: pd.DataFrame,
    split_file: Path,
) -> list[TrainedMember]:
    """Train every member before ``budget_s`` seconds from now have passed, in member order; ``streams``
    groups the member numbers (from 1): each group in its own process, all at once; empty: all in turn here.
    Each member's own budget is what is left of the common one when it starts."""
    start = time.time()
    groups = [list(stream) for stream in streams] or [list(range(1, len(plans) + 1))]
    jobs = [[(number, plans[number - 1]) for number in group] for group in groups]
    if len(jobs) == 1:
        trained = train_stream(1, jobs[0], start, budget_s, source, frame, split_file)
    else:
        jobs = [[(number, _versioned(plans, number, source)) for number, _ in group] for group in jobs]
        trained = _train_concurrently(jobs, start, budget_s, source, frame, split_file)
    return [member for _, member in sorted(trained, key=lambda pair: pair[0])]


def train_stream(
    stream: int,
    jobs: list[tuple[int, MemberPlan]],
    start: float,
    budget_s: float,
    source: DataSource,
    frame: pd.DataFrame,
    split_file: Path,
) -> list[tuple[int, TrainedMember]]:
    """Train one stream's members in turn, each with what is left of the budget counted from ``start`` (a
    ``time.time()``, common to all streams); (member number, trained member) pairs."""
    trained: list[tuple[int, TrainedMember]] = []
    for number, plan in jobs:
        started = time.time() - start
        if started >= budget_s:
            done = ", ".join(str(n) for n, _ in trained) or "none"
            raise BudgetSpentError(
                f"The {budget_s / 60:.0f}-minute budget was spent before member {number} started (members "
                f"trained in its stream: {done}; their checkpoints are kept in models/).\n"
                "Fix: raise --budget-minutes or drop members."
            )
        settings = config_from_notebook(
            {**plan.training, "time_budget_s": budget_s - started}, label=plan.label, source=source
        )
        result = train(settings, frame, split_file=split_file, data_description=source.description)
        member = TrainedMember(settings, result, stream, round(started, 1), round(time.time() - start, 1))
        trained.append((number, member))
    return trained


def _versioned(plans: Sequence[MemberPlan], number: int, source: DataSource) -> MemberPlan:
    """Member ``number`` with its checkpoint version fixed before any stream starts: runs of one backbone
    started at once would otherwise each take the next free version and collide on their file names."""
    plan = plans[number - 1]
    if plan.training.get("version") is not None:
        return plan

    def slot(member: MemberPlan) -> tuple[str, Path]:
        settings = config_from_notebook(member.training, label=member.label, source=source)
        return settings.arch, settings.path("models")

    arch, models_dir = slot(plan)
    earlier = sum(slot(other) == (arch, models_dir) for other in plans[: number - 1])
    return MemberPlan({**plan.training, "version": next_version(arch, models_dir) + earlier}, plan.label)


def _train_in_child(*args: object) -> list[tuple[int, TrainedMember]]:
    """:func:`train_stream` in a worker process, its models dropped (Keras models do not cross processes)."""
    trained = train_stream(*args)  # type: ignore[arg-type]
    return [(n, dataclasses.replace(m, result=dataclasses.replace(m.result, model=None))) for n, m in trained]


def _train_concurrently(
    jobs: list[list[tuple[int, MemberPlan]]],
    start: float,
    budget_s: float,
    source: DataSource,
    frame: pd.DataFrame,
    split_file: Path,
) -> list[tuple[int, TrainedMember]]:
    """Each stream in its own fresh (spawned: TensorFlow does not survive a fork) process, all at once; every
    stream runs to its end before the first error, if any, is raised."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context) as pool:
        futures = [
            pool.submit(_train_in_child, stream, stream_jobs, start, budget_s, source, frame, split_file)
            for stream, stream_jobs in enumerate(jobs, start=1)
        ]
        wait(futures)
    trained: list[tuple[int, TrainedMember]] = []
    for future in futures:
        try:
            trained += future.result()
        except BrokenProcessPool as error:
            raise SkinLesionError(
                "A training stream's process ended abruptly (out of memory?); the checkpoints of finished "
                "members are kept in models/.\nFix: train fewer streams at once (the config's 'streams')."
            ) from error
    return trained
