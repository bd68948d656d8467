"""Train an ensemble's members within one wall-clock budget: in turn in this process, or in streams that train
at the same time, each stream in its own process and its members in turn (one TensorFlow process gains only
about 1.4x from a second CPU core, two processes together more)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

import pandas as pd

from helpers.core.errors import SkinLesionError
from helpers.data.source import DataSource
from helpers.models.checkpoints import next_version
from helpers.training.run import TrainResult, raising_on_sigterm, train
from helpers.training.settings import TrainConfig, config_from_notebook


class BudgetSpentError(SkinLesionError):
    """The wall-clock budget ended before a member could start (the members trained so far are kept)."""


class StreamError(SkinLesionError):
    """One or more training streams failed; the members the other streams trained are kept."""


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


Job = tuple[int, MemberPlan]
"""A member's number (from 1) and its plan."""


@dataclass(frozen=True)
class Budget:
    """What every stream shares: the common start (a ``time.time()``), the budget from it, and the data."""

    start: float
    seconds: float
    source: DataSource
    frame: pd.DataFrame
    split_file: Path


def train_members(
    plans: Sequence[MemberPlan],
    streams: Sequence[Sequence[int]],
    budget_s: float,
    source: DataSource,
    frame: pd.DataFrame,
    split_file: Path,
) -> list[TrainedMember]:
    """Train every member, returned in member order, within ``budget_s`` seconds from now (a member starts
    only while some is left, and gets what is left as its own budget). ``streams`` groups the member numbers
    (from 1): two or more groups train at the same time, each in its own process; one group, or none (all
    members), trains in turn in this process."""
    groups = [list(stream) for stream in streams] or [list(range(1, len(plans) + 1))]
    if sorted(number for group in groups for number in group) != list(range(1, len(plans) + 1)):
        raise ValueError(f"streams {groups} must list each member number 1..{len(plans)} exactly once")
    versioned = with_versions(plans, source)
    jobs = [[(number, versioned[number - 1]) for number in group] for group in groups]
    budget = Budget(time.time(), budget_s, source, frame, split_file)
    if len(jobs) == 1:
        trained = train_stream(1, jobs[0], budget)
    else:
        trained = _train_concurrently(jobs, budget)
    return [member for _, member in sorted(trained, key=lambda pair: pair[0])]


def with_versions(plans: Sequence[MemberPlan], source: DataSource) -> list[MemberPlan]:
    """The plans with each member's checkpoint version fixed before any trains: members of one backbone in
    one folder started at once would each take the next free version and collide on their file names.
    Versions given explicitly are kept and skipped; one given to two such members is refused."""
    slots = [_slot(plan, source) for plan in plans]
    explicit = Counter(
        (*slot, plan.training["version"])
        for slot, plan in zip(slots, plans, strict=True)
        if plan.training.get("version") is not None
    )
    if shared := [key for key, count in explicit.items() if count > 1]:
        arch, folder, version = shared[0]
        raise SkinLesionError(
            f"Several members would save {arch} version {version} in {folder} (their checkpoint "
            "file names would collide).\nFix: drop the 'version' setting (each member gets its own)."
        )
    taken = set(explicit)
    versioned = []
    for slot, plan in zip(slots, plans, strict=True):
        if plan.training.get("version") is None:
            version = next_version(*slot)
            while (*slot, version) in taken:
                version += 1
            taken.add((*slot, version))
            plan = MemberPlan({**plan.training, "version": version}, plan.label)
        versioned.append(plan)
    return versioned


def _slot(plan: MemberPlan, source: DataSource) -> tuple[str, Path]:
    """The backbone and the checkpoint folder a member saves under (which its version numbers)."""
    settings = config_from_notebook(plan.training, label=plan.label, source=source)
    return settings.arch, settings.path("models")


def train_stream(stream: int, jobs: list[Job], budget: Budget) -> list[tuple[int, TrainedMember]]:
    """Train one stream's members in turn, each with what is left of the budget counted from its common start;
    (member number, trained member) pairs."""
    source, budget_s = budget.source, budget.seconds
    trained: list[tuple[int, TrainedMember]] = []
    for number, plan in jobs:
        # rounded as recorded, so that the budget it leaves is the recorded one
        started = round(time.time() - budget.start, 1)
        if started >= budget_s:
            done = ", ".join(str(n) for n, _ in trained) or "none"
            raise BudgetSpentError(
                f"The {budget_s / 60:.0f}-minute budget was spent before member {number} started (stream "
                f"{stream}; members it trained: {done}; checkpoints kept in {_slot(plan, source)[1]}).\n"
                "Fix: raise --budget-minutes, move the member to a stream that ends sooner, or drop it."
            )
        settings = config_from_notebook(
            {**plan.training, "time_budget_s": budget_s - started}, label=plan.label, source=source
        )
        result = train(
            settings, budget.frame, split_file=budget.split_file, data_description=source.description
        )
        member = TrainedMember(settings, result, stream, started, round(time.time() - budget.start, 1))
        trained.append((number, member))
    return trained


def _train_concurrently(jobs: list[list[Job]], budget: Budget) -> list[tuple[int, TrainedMember]]:
    """Each stream in its own fresh process (spawned: TensorFlow does not survive a fork), all at once. A
    stream's failure is printed when it happens and stops no other stream; after the last, every failure is
    raised together. Stopping this process (Ctrl-C, SIGTERM) stops the streams (they keep resume state)."""
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # else the first process takes a GPU's memory
    context = multiprocessing.get_context("spawn")
    running: dict[Connection, tuple[int, multiprocessing.process.BaseProcess]] = {}
    for stream, stream_jobs in enumerate(jobs, start=1):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_stream_process,
            args=(sender, stream, stream_jobs, budget),
            name=f"training-stream-{stream}",
        )
        process.start()
        sender.close()
        running[receiver] = (stream, process)
    trained: list[tuple[int, TrainedMember]] = []
    failures: list[str] = []
    processes = [process for _, process in running.values()]
    # SIGTERM here (its default would end this process and leave the streams training) stops them too
    with raising_on_sigterm(KeyboardInterrupt), _terminated_on_exit(processes):
        while running:
            for receiver in wait(list(running)):
                stream, process = running.pop(receiver)
                outcome = _receive(receiver, process)
                if isinstance(outcome, str):
                    failures.append(f"stream {stream}: {outcome}")
                    print(f"Training stream {stream} failed (the other streams go on): {outcome}")
                else:
                    trained += outcome
    if failures:
        raise StreamError(
            "Training failed in " + "; ".join(failures) + "\nThe members the other streams trained are kept "
            "(their checkpoints in the models folder).\nFix: the cause above; for a process that died, train "
            "fewer streams at once (the config's 'streams')."
        )
    return trained


def _stream_process(sender: Connection, stream: int, jobs: list[Job], budget: Budget) -> None:
    """A stream's process: train it and send back its members (their models dropped: Keras models do not
    cross processes) or the error's text."""
    try:
        trained = train_stream(stream, jobs, budget)
        sender.send([(n, dataclasses.replace(m, result=_without_model(m.result))) for n, m in trained])
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent, named
        sender.send(f"{type(error).__name__}: {error}")
    finally:
        sender.close()


def _without_model(result: TrainResult) -> TrainResult:
    """``result`` without its Keras model, which cannot cross processes (its checkpoint holds the weights)."""
    return dataclasses.replace(result, model=None)


def _receive(receiver: Connection, process: multiprocessing.process.BaseProcess) -> list | str:
    """What a stream's process sent (its members, or its error's text), or why it sent nothing."""
    try:
        outcome = receiver.recv()
    except EOFError:
        process.join()
        return f"its process ended without a result (exit code {process.exitcode}; killed for memory?)"
    process.join()
    return outcome


@contextmanager
def _terminated_on_exit(processes: list[multiprocessing.process.BaseProcess]) -> Iterator[None]:
    """Send SIGTERM to every process still running when the block ends early (each training run then stops
    at once, keeping its completed epochs and saying how to resume)."""
    try:
        yield
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
