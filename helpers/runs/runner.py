"""Execute the numbered notebooks with papermill into ``runs/<UTC time>-<config>/``; sources stay clean.

Parameters come from a run configuration (``configs/*.yaml``) plus command-line overrides (see
:mod:`helpers.runs.params`). A failing cell raises :class:`NotebookRunError` naming the notebook, the
cell, the exception and the executed copy that shows the outputs up to the failure.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import yaml

from helpers.core import config
from helpers.core.atomic import atomic_write_text
from helpers.core.errors import SkinLesionError
from helpers.runs.params import (
    ConfigError,
    RunConfig,
    declared_parameters,
    default_config_file,
    load_run_config,
    plan_parameters,
)

if TYPE_CHECKING:
    from papermill.exceptions import PapermillExecutionError

NOTEBOOK_PATTERN = re.compile(r"\d\d-.+")
KERNEL_NAME = "python3"
"""The venv's ipykernel spec: its ``python`` command resolves to the interpreter running the runner."""


class NotebookRunError(SkinLesionError):
    """A notebook that failed while executing; the message points at the cell and the executed copy."""


def numbered_notebooks(notebooks_dir: Path = config.NOTEBOOKS_DIR) -> list[Path]:
    """The ``NN-*.ipynb`` notebooks of a folder, in execution order."""
    return sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if NOTEBOOK_PATTERN.fullmatch(p.stem))


def select_notebooks(names: Sequence[str] | None, notebooks_dir: Path = config.NOTEBOOKS_DIR) -> list[Path]:
    """Resolve names such as ``01``, ``01-eda`` or a path to notebook files (all numbered ones if none)."""
    available = numbered_notebooks(notebooks_dir)
    if not names:
        if not available:
            raise NotebookRunError(f"No numbered notebooks (NN-name.ipynb) in {notebooks_dir}")
        return available
    selected = {_resolve_name(name, available): None for name in names}
    return sorted(selected, key=lambda p: p.name)


def run_notebooks(
    notebooks: Sequence[str] | None,
    *,
    config_file: Path | None,
    overrides: Mapping[str, object],
    runs_dir: Path = config.RUNS_DIR,
    notebooks_dir: Path = config.NOTEBOOKS_DIR,
) -> Path:
    """Execute the selected notebooks in order with merged parameters; return the run folder of the copies."""
    paths = select_notebooks(notebooks, notebooks_dir)
    run_config = load_run_config(config_file or _announce_default_config())
    if run_config.members:  # the notebooks would train one model and look like the ensemble's run
        raise ConfigError(
            f"{run_config.path} lists ensemble members, which only bench/accuracy.py trains.\n"
            f"Fix: uv run python bench/accuracy.py --config {run_config.path}, or run the notebooks with the "
            "config it extends."
        )
    declared = {p.stem: declared_parameters(p) for p in {*numbered_notebooks(notebooks_dir), *paths}}
    plan = plan_parameters(run_config, declared, overrides, [p.stem for p in paths])
    run_dir = _new_run_dir(Path(runs_dir), run_config.name)
    _write_run_record(run_dir, run_config, plan)
    for number, path in enumerate(paths, start=1):
        label = f"[{number}/{len(paths)}] {path.stem}"
        print(f"{label}: running with {plan[path.stem]}", flush=True)
        started = time.monotonic()
        output = _execute(path, run_dir / path.name, plan[path.stem])
        print(f"{label}: done in {time.monotonic() - started:.1f} s -> {output}", flush=True)
    return run_dir


def _resolve_name(name: str, available: Sequence[Path]) -> Path:
    if name.endswith(".ipynb") or "/" in name:
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise NotebookRunError(f"Notebook not found: {path}")
        return path
    matches = [p for p in available if p.stem == name or p.stem.startswith(f"{name}-")]
    if len(matches) != 1:
        problem = "matches several notebooks" if matches else "matches no notebook"
        choices = ", ".join(p.stem for p in available) or "none"
        raise NotebookRunError(f"Notebook name {name!r} {problem}; available: {choices}")
    return matches[0]


def _announce_default_config() -> Path:
    path = default_config_file()
    real = path.stem != "demo"
    banner = "=" * 78
    what = "REAL HAM10000 data found" if real else "NO real HAM10000 data found -> SYNTHETIC DEMO DATA"
    print(f"{banner}\nNo config given: {what}.\nUsing config {path}\n{banner}", flush=True)
    return path


def _new_run_dir(runs_dir: Path, name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1, 100):
        run_dir = runs_dir / (f"{stamp}-{name}" if attempt == 1 else f"{stamp}-{name}-{attempt}")
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    raise NotebookRunError(f"Could not create a new run folder in {runs_dir}")


def _write_run_record(run_dir: Path, run_config: RunConfig, plan: Mapping[str, Mapping[str, object]]) -> None:
    """Save the config path and the exact parameters given to each notebook next to the executed copies."""
    notebooks = {stem: dict(values) for stem, values in plan.items()}
    record = {"config": str(run_config.path), "name": run_config.name, "notebooks": notebooks}
    atomic_write_text(run_dir / "parameters.yaml", yaml.safe_dump(record, sort_keys=False))


def _execute(source: Path, output: Path, parameters: Mapping[str, object]) -> Path:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=dict(parameters),
            cwd=str(source.parent),
            kernel_name=KERNEL_NAME,
            progress_bar=True,
            log_output=False,
        )
    except PapermillExecutionError as error:
        raise NotebookRunError(_failure_message(source, output, error)) from None
    except Exception as error:  # kernel death, timeouts, bad notebook JSON: still point at the copy
        raise NotebookRunError(
            f"Notebook {source.stem} could not be executed: {type(error).__name__}: {error}\n"
            f"Executed copy: {output}"
        ) from error
    return output


def _failure_message(source: Path, output: Path, error: PapermillExecutionError) -> str:
    """Name the notebook, the failing cell (index in the source, first line) and the exception."""
    lines = [line for line in error.source.splitlines() if line.strip()]
    first_line = lines[0] if lines else "(empty cell)"
    cells = nbformat.read(source, as_version=4).cells
    index = next((i for i, cell in enumerate(cells) if cell.source == error.source), error.cell_index)
    return (
        f"Notebook {source.stem} failed in cell {index} (0-based) of {source}, "
        f"execution count {error.exec_count}: "
        f"{first_line}\n{error.ename}: {error.evalue}\n"
        f"Executed copy with the outputs up to the failure: {output}"
    )
