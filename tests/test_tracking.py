"""Tracking.md: header creation, append-only rows, cell escaping, synthetic marking, concurrent appends."""

from __future__ import annotations

import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from helpers.runs import tracking

ROW_PATTERN = re.compile(r"^\| \d{4}-\d\d-\d\dT\d\d:\d\dZ \|")


def _append(path: Path, **changes) -> None:
    arguments = {
        "config": "unit",
        "notebook": "01-eda",
        "params": {"seed": 42},
        "metrics": {"auc": 0.91234},
        "outputs": [],
        "path": path,
    }
    tracking.append_run(**{**arguments, **changes})


def _rows(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if ROW_PATTERN.match(line)]


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]


def test_creates_file_with_intro_and_header(tmp_path):
    path = tmp_path / "Tracking.md"
    _append(path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Tracking\n")
    assert "| " + " | ".join(tracking.COLUMNS) + " |\n|---|" in text
    (row,) = _rows(path)
    cells = _cells(row)
    assert len(cells) == len(tracking.COLUMNS)
    assert cells[1:5] == ["unit", tracking.git_commit(), "01-eda", "seed=42"]
    assert cells[5] == "auc=0.9123"


def test_append_keeps_earlier_rows_byte_identical(tmp_path):
    path = tmp_path / "Tracking.md"
    _append(path, notebook="01-eda")
    before = path.read_bytes()
    _append(path, notebook="02-train")
    after = path.read_bytes()
    assert after.startswith(before)
    assert after[len(before) :].decode().count("\n") == 1
    assert [_cells(row)[3] for row in _rows(path)] == ["01-eda", "02-train"]


def test_appends_newline_to_hand_edited_file_without_one(tmp_path):
    path = tmp_path / "Tracking.md"
    _append(path)
    path.write_text(path.read_text(encoding="utf-8").rstrip("\n"), encoding="utf-8")
    _append(path)
    assert len(_rows(path)) == 2


def test_pipes_and_newlines_are_escaped(tmp_path):
    path = tmp_path / "Tracking.md"
    _append(path, params={"note": "a|b\nc\r\nd"}, config="x|y")
    (row,) = _rows(path)
    cells = _cells(row)
    assert len(cells) == len(tracking.COLUMNS)
    assert cells[1] == "x\\|y"
    assert cells[4] == "note=a\\|b c d"


def test_synthetic_runs_are_marked(tmp_path):
    path = tmp_path / "Tracking.md"
    _append(path, synthetic=True, config="demo")
    assert _cells(_rows(path)[0])[5].startswith(f"{tracking.SYNTHETIC_MARKER}, auc=")


def test_outputs_are_relative_to_the_tracking_file(tmp_path):
    path = tmp_path / "Tracking.md"
    _append(path, outputs=[tmp_path / "figures" / "a.svg", "/elsewhere/b.csv"])
    assert _cells(_rows(path)[0])[6] == "figures/a.svg, /elsewhere/b.csv"


def _append_many(path: str, worker: int, count: int) -> None:
    for index in range(count):
        _append(Path(path), notebook=f"w{worker}-{index}")


def test_concurrent_appends_all_land(tmp_path):
    path = tmp_path / "Tracking.md"
    workers, per_worker = 4, 10
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(_append_many, str(path), w, per_worker) for w in range(workers)]
        for future in futures:
            future.result()
    notebooks = sorted(_cells(row)[3] for row in _rows(path))
    assert notebooks == sorted(f"w{w}-{i}" for w in range(workers) for i in range(per_worker))
    assert path.read_text(encoding="utf-8").count("# Tracking") == 1
