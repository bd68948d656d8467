"""Checks shared by the dataset loaders, and the shared frame schema they all return.

CSV problems (missing columns, unknown labels, duplicate ids) always raise a DataError naming the file.
Image-file problems either raise one DataError listing them all, or, with ``on_error="skip"``, drop the
rows and return a :class:`SkipReport` listing every skipped row, with a logged warning: never silently.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from helpers.core.atomic import atomic_path
from helpers.core.config import CLASS_NAMES, MALIGNANT_CLASSES
from helpers.core.errors import DataError
from helpers.data.images import image_problem

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]

FRAME_COLUMNS: tuple[str, ...] = (
    "image_id",
    "image_path",
    "lesion_id",
    "dx",
    "label",
    "malignant",
    "dx_type",
    "age",
    "sex",
    "localization",
    "mask_path",
    "source",
)
"""Columns every loader returns, in this order (loader-specific extras follow)."""

MAX_LISTED = 10
"""How many offending rows or values an error message lists before summarising the rest as a count."""

PROGRESS_MIN_FILES = 2000
"""Image checks of at least this many files show a tqdm progress bar."""

_CHECK_WORKERS = min(8, os.cpu_count() or 1)
_CHUNK_SIZE = 256
_SKIP_REPORT_ATTR = "skip_report"


class SkippedRow(NamedTuple):
    """One row a loader left out, and why."""

    image_id: str
    image_path: str
    reason: str


@dataclass
class SkipReport:
    """Every row a loader dropped with ``on_error="skip"``, so that skipping is visible and auditable."""

    rows: list[SkippedRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def to_frame(self) -> pd.DataFrame:
        """The skipped rows as a DataFrame with columns image_id, image_path, reason."""
        return pd.DataFrame(self.rows, columns=list(SkippedRow._fields))

    def write_csv(self, path: str | Path) -> Path:
        """Write the skipped rows to a CSV file atomically and return its path."""
        with atomic_path(path) as tmp:
            self.to_frame().to_csv(tmp, index=False)
        return Path(path)


def skip_report(frame: pd.DataFrame) -> SkipReport:
    """The SkipReport a loader attached to the frame it returned (empty when nothing was skipped)."""
    return frame.attrs.get(_SKIP_REPORT_ATTR, SkipReport())


def format_listing(items: Sequence[str]) -> str:
    """Up to MAX_LISTED items, one per indented line, then how many more were left out."""
    lines = [f"  {item}" for item in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        lines.append(f"  ... and {len(items) - MAX_LISTED} more")
    return "\n".join(lines)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV with every column as text (blank cells as "") and column names stripped of spaces on both
    sides, turning read errors into a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError("CSV file not found.", path=path, fix="Check the path or re-download the dataset.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(
            f"Cannot parse the CSV file: {error}", path=path, fix="Replace it with the original UTF-8 CSV."
        ) from None
    return frame.rename(columns=lambda name: str(name).strip())


def require_rows(frame: pd.DataFrame, path: str | Path) -> None:
    """Raise DataError when the CSV has a header but no rows (rather than an odd error further on)."""
    if frame.empty:
        raise DataError(
            "The CSV has a header but no rows: it lists no images.",
            path=path,
            fix="Use the original file; it may have been cut short while copying or editing.",
        )


def require_columns(frame: pd.DataFrame, required: Sequence[str], path: str | Path) -> None:
    """Raise DataError naming the missing columns and the expected header if any of ``required`` is absent."""
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DataError(
            f"The CSV lacks column(s) {', '.join(missing)}. Found: {', '.join(map(str, frame.columns))}.",
            path=path,
            fix=f"Use the original file; its header must include: {','.join(required)}",
        )


def require_filled(frame: pd.DataFrame, columns: Iterable[str], path: str | Path) -> None:
    """Raise DataError listing the CSV lines where any of ``columns`` is blank."""
    for column in columns:
        blank_lines = [str(index + 2) for index in frame.index[frame[column].str.strip() == ""]]
        if blank_lines:
            raise DataError(
                f"{len(blank_lines)} row(s) have a blank {column}; CSV lines:\n{format_listing(blank_lines)}",
                path=path,
                fix=f"Fill in {column} on those lines or remove them.",
            )


def read_checked_table(
    path: str | Path, columns: Sequence[str], *, filled: Iterable[str] = (), unique: str | None = None
) -> pd.DataFrame:
    """The CSV's ``columns`` as stripped text, after checking that they exist, that the ``filled`` ones have
    no blank cell and that column ``unique`` repeats no value (each problem raises a DataError naming it)."""
    frame = read_table(path)
    require_columns(frame, columns, path)
    frame = frame[list(columns)].apply(lambda column: column.str.strip())
    require_filled(frame, filled, path)
    if unique is not None:
        check_unique(frame, unique, path)
    return frame


def check_labels(
    frame: pd.DataFrame, path: str | Path, column: str = "dx", allowed: Sequence[str] = CLASS_NAMES
) -> None:
    """Raise DataError listing the unknown values of ``column``, each with its row count."""
    unknown = frame.loc[~frame[column].isin(allowed), column]
    if len(unknown):
        counts = [f"{value!r}: {count} row(s)" for value, count in unknown.value_counts().items()]
        raise DataError(
            f"{len(unknown)} row(s) have an unknown {column} value:\n{format_listing(counts)}",
            path=path,
            fix=f"Use only these {column} values: {', '.join(allowed)}.",
        )


def check_unique(frame: pd.DataFrame, column: str, path: str | Path) -> None:
    """Raise DataError listing the values of ``column`` that occur on more than one row."""
    repeated = frame.loc[frame[column].duplicated(keep=False), column]
    if len(repeated):
        values = [f"{value} ({count} rows)" for value, count in repeated.value_counts().sort_index().items()]
        raise DataError(
            f"{len(repeated)} rows share a {column} with another row:\n{format_listing(values)}",
            path=path,
            fix=f"Each {column} must appear once: remove the duplicate rows.",
        )


def numeric_column(frame: pd.DataFrame, column: str, path: str | Path) -> pd.Series:
    """``column`` parsed as floats (blank -> NaN); raise DataError listing values that are not numbers."""
    text = frame[column].str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce")
    bad = text[values.isna() & (text != "")]
    if len(bad):
        raise DataError(
            f"{len(bad)} row(s) have a non-numeric {column}:\n{format_listing([repr(v) for v in bad])}",
            path=path,
            fix=f"Use numbers (or leave blank) in column {column}.",
        )
    return values.astype(float)


def image_problems(paths: Sequence[str], *, verify: bool = True, decode: bool = False) -> list[str | None]:
    """image_problem for every path, in chunks on threads (I/O and OpenCV release the GIL), with progress."""
    check = partial(image_problem, verify=verify, decode=decode)
    chunks = [paths[start : start + _CHUNK_SIZE] for start in range(0, len(paths), _CHUNK_SIZE)]
    problems: list[str | None] = []
    progress = tqdm(
        total=len(paths), desc="Checking images", unit="img", disable=len(paths) < PROGRESS_MIN_FILES
    )
    with ThreadPoolExecutor(_CHECK_WORKERS) as pool, progress:
        for chunk_problems in pool.map(lambda chunk: [check(path) for path in chunk], chunks):
            problems.extend(chunk_problems)
            progress.update(len(chunk_problems))
    return problems


def validate_image_files(
    frame: pd.DataFrame,
    *,
    verify_images: bool = True,
    decode: bool = False,
    on_error: OnError = "raise",
    origin: str | Path | None = None,
    fix: str | None = None,
) -> tuple[pd.DataFrame, SkipReport]:
    """Check every ``image_path`` of the frame; raise one DataError listing the problems, or skip those rows.

    ``verify_images=False`` only checks existence (a stat per file); the default also reads each file's
    first and last bytes (empty, not an image, truncated); ``decode=True`` decodes every image too.
    ``origin`` names the CSV or folder the rows came from; ``fix`` overrides the suggested fix.
    Returns the frame without the bad rows (all rows in raise mode) and the report of skipped rows.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    problems = pd.Series(
        image_problems(frame["image_path"].tolist(), verify=verify_images, decode=decode),
        index=frame.index,
        dtype=object,
    )
    bad = frame.loc[problems.notna()]
    report = SkipReport(
        [SkippedRow(row.image_id, row.image_path, problems[index]) for index, row in bad.iterrows()]
    )
    if not report:
        return frame, report
    source = f" from {Path(origin).name}" if origin is not None else ""
    summary = f"{len(report)} of {len(frame)} images{source} are missing or damaged"
    if on_error == "raise":
        lines = [f"{row.image_id}: {row.reason} ({row.image_path})" for row in report.rows]
        raise DataError(
            f"{summary}:\n{format_listing(lines)}",
            path=origin,
            fix=fix or "Restore or replace these files, or pass on_error='skip' to leave their rows out.",
        )
    logger.warning("%s; skipped them (see skip_report(frame) for the list).", summary)
    return frame.loc[problems.isna()], report


def conform_frame(frame: pd.DataFrame, source: str, report: SkipReport | None = None) -> pd.DataFrame:
    """Complete a loader's frame to the shared schema: defaults, label/malignant from dx, order, sorting.

    Missing optional columns get defaults (lesion_id = image_id, blank text, NaN age, no mask); ``malignant``
    is derived from ``dx`` unless given. The skip report, if any, is attached for :func:`skip_report`.
    """
    frame = frame.copy()
    defaults = {"lesion_id": frame["image_id"], "dx": "", "dx_type": "", "sex": "", "localization": ""}
    for column, value in defaults.items():
        if column not in frame.columns:
            frame[column] = value
    if "age" not in frame.columns:
        frame["age"] = np.nan
    if "mask_path" not in frame.columns:
        frame["mask_path"] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    frame["label"] = [CLASS_NAMES.index(dx) if dx else -1 for dx in frame["dx"]]
    if "malignant" not in frame.columns:
        frame["malignant"] = frame["dx"].isin(MALIGNANT_CLASSES)
    frame["malignant"] = frame["malignant"].astype(int)
    frame["source"] = source
    extras = [column for column in frame.columns if column not in FRAME_COLUMNS]
    frame = frame[[*FRAME_COLUMNS, *extras]].sort_values("image_id", kind="stable").reset_index(drop=True)
    frame.attrs[_SKIP_REPORT_ATTR] = report or SkipReport()
    return frame
