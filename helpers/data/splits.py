"""Lesion-level train/val/test splits: grouped by lesion, stratified by class, saved once and reused.

HAM10000 holds several images of most lesions, so an image-level split leaks the same lesion into train
and test. Every split made here keeps each lesion (and each known near-duplicate pair) in one partition.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core import config
from helpers.core.atomic import atomic_path, atomic_write_text
from helpers.core.errors import DataError

PARTITIONS: tuple[str, ...] = ("train", "val", "test")
SPLIT_COLUMNS: tuple[str, ...] = ("image_id", "lesion_id", "dx", "partition")

DuplicatePairs = Iterable[tuple[str, str]]


def make_lesion_split(
    frame: pd.DataFrame,
    *,
    val_fraction: float = config.DEFAULT_HOLDOUT_FRACTION,
    test_fraction: float = config.DEFAULT_HOLDOUT_FRACTION,
    seed: int = config.DEFAULT_SPLIT_SEED,
    duplicate_pairs: DuplicatePairs | None = None,
    stratify_column: str = "label",
) -> pd.DataFrame:
    """Return a copy of ``frame`` with a ``partition`` column: no lesion in two partitions, class-stratified.

    Groups are lesions merged with ``duplicate_pairs`` (image-id pairs, e.g. from
    ``helpers.data.ham10000.load_duplicate_pairs``; pairs naming images outside the frame are ignored). Each
    group is stratified by the rarest ``stratify_column`` value among its images; within a stratum, groups
    (largest first, seeded order among equal sizes) go to the partition furthest below its target image
    count, so every class lands within about one group of the target fractions.
    """
    _check_fractions(val_fraction, test_fraction)
    _require_columns(frame, ("image_id", "lesion_id", stratify_column), "the frame to split")
    _check_unique_images(frame, "the frame to split")
    groups = group_ids(frame, duplicate_pairs)
    targets = dict(
        zip(PARTITIONS, (1.0 - val_fraction - test_fraction, val_fraction, test_fraction), strict=True)
    )
    group_partition = _allocate_groups(_group_table(frame, groups, stratify_column), targets, seed)
    result = frame.copy()
    result["partition"] = groups.map(group_partition).to_numpy()
    return result


def group_ids(frame: pd.DataFrame, duplicate_pairs: DuplicatePairs | None = None) -> pd.Series:
    """One group id per row: its lesion id, with lesions joined by a duplicate pair merged (union-find)."""
    lesions = frame["lesion_id"].astype(str)
    parent = {lesion: lesion for lesion in lesions.unique()}

    def root(lesion: str) -> str:
        while parent[lesion] != lesion:
            parent[lesion] = parent[parent[lesion]]
            lesion = parent[lesion]
        return lesion

    lesion_of = dict(zip(frame["image_id"].astype(str), lesions, strict=True))
    for first, second in duplicate_pairs or ():
        if first in lesion_of and second in lesion_of:
            a, b = root(lesion_of[first]), root(lesion_of[second])
            parent[max(a, b)] = min(a, b)
    return lesions.map(root)


def _group_table(frame: pd.DataFrame, groups: pd.Series, stratify_column: str) -> pd.DataFrame:
    """Per group: its image count and its stratum (the group's rarest value of ``stratify_column``)."""
    values = frame[stratify_column].astype(str)
    rarity = values.map(values.value_counts())
    rows = pd.DataFrame(
        {"group": groups.to_numpy(), "stratum": values.to_numpy(), "rarity": rarity.to_numpy()}
    )
    rarest = rows.sort_values(["rarity", "stratum"], kind="stable").drop_duplicates("group")
    sizes = rows.groupby("group").size().rename("size")
    return rarest.set_index("group")[["stratum"]].join(sizes).sort_index()


def _allocate_groups(table: pd.DataFrame, targets: dict[str, float], seed: int) -> dict[str, str]:
    """Greedy seeded allocation of groups to partitions, stratum by stratum (rarest stratum first)."""
    rng = np.random.default_rng(seed)
    stratum_sizes = table.groupby("stratum")["size"].sum().sort_values(kind="stable")
    allocation: dict[str, str] = {}
    for stratum, stratum_total in stratum_sizes.items():
        members = table[table["stratum"] == stratum]
        members = members.iloc[rng.permutation(len(members))].sort_values(
            "size", ascending=False, kind="stable"
        )
        filled = dict.fromkeys(targets, 0)
        for group, size in members["size"].items():
            partition = max(targets, key=lambda p: targets[p] * stratum_total - filled[p])
            filled[partition] += size
            allocation[group] = partition
    return allocation


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must each lie in [0, 1) "
            "and leave a non-empty training share (their sum below 1)"
        )


def _require_columns(
    frame: pd.DataFrame, columns: Sequence[str], what: str, path: Path | None = None
) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} lacks the column(s) {missing}; it has {list(frame.columns)}",
            path=path,
            fix="build the frame with the dataset loaders (helpers.data.ham10000 etc.) or fix the CSV header",
        )


def _check_unique_images(frame: pd.DataFrame, what: str, path: Path | None = None) -> None:
    repeated = frame["image_id"][frame["image_id"].duplicated()].unique()
    if len(repeated):
        raise DataError(
            f"{what} lists {len(repeated)} image id(s) more than once, e.g. {list(repeated[:5])}",
            path=path,
            fix="keep one row per image",
        )


def lesion_leaks(frame: pd.DataFrame, duplicate_pairs: DuplicatePairs | None = None) -> pd.Series:
    """Partitions spanned by each group (lesion + duplicate pairs) found in more than one partition."""
    _require_columns(frame, ("image_id", "lesion_id", "partition"), "the split frame")
    spans = frame["partition"].groupby(group_ids(frame, duplicate_pairs).to_numpy()).nunique()
    return spans[spans > 1]


def check_no_lesion_leak(frame: pd.DataFrame, duplicate_pairs: DuplicatePairs | None = None) -> None:
    """Raise :class:`DataError` if any lesion (or duplicate-pair group) has images in two partitions."""
    leaks = lesion_leaks(frame, duplicate_pairs)
    if len(leaks):
        raise DataError(
            f"{len(leaks)} lesion(s) have images in more than one partition, e.g. {list(leaks.index[:5])}",
            fix="split with helpers.data.splits.make_lesion_split, which groups images by lesion",
        )


def split_summary(frame: pd.DataFrame, by: str = "dx") -> pd.DataFrame:
    """Images per class (``by``) per partition, each partition's share of the class, and leaked lesions.

    One row per class plus a ``total`` row; ``leaked_lesions`` counts the class's lesions seen in more
    than one partition (0 for a lesion-level split).
    """
    _require_columns(frame, ("lesion_id", "partition", by), "the split frame")
    counts = pd.crosstab(frame[by], frame["partition"]).reindex(columns=list(PARTITIONS), fill_value=0)
    counts.loc["total"] = counts.sum()
    counts["total"] = counts.sum(axis=1)
    for partition in PARTITIONS:
        counts[f"{partition}_pct"] = (100 * counts[partition] / counts["total"]).round(1)
    spans = frame.groupby("lesion_id").agg(cls=(by, "first"), partitions=("partition", "nunique"))
    leaked = spans[spans["partitions"] > 1]["cls"].value_counts()
    counts["leaked_lesions"] = leaked.reindex(counts.index, fill_value=0)
    counts.loc["total", "leaked_lesions"] = len(spans[spans["partitions"] > 1])
    counts.index.name, counts.columns.name = by, None
    return counts


def default_split_name(seed: int = config.DEFAULT_SPLIT_SEED) -> str:
    """The name of the split drawn with ``seed`` when a run names none, e.g. ``lesion_seed42``."""
    return f"lesion_seed{seed}"


def split_path(name: str) -> Path:
    """Where the split called ``name`` lives: ``data/splits/{name}.csv``."""
    return config.SPLITS_DIR / f"{name}.csv"


def parameters_path(path: str | Path) -> Path:
    """The JSON sidecar beside a split CSV that records how the split was made."""
    return Path(path).with_suffix(".json")


def save_split(frame: pd.DataFrame, path: str | Path, parameters: dict | None = None) -> Path:
    """Write image_id, lesion_id, dx, partition to ``path`` atomically, plus a parameters sidecar if given."""
    _require_columns(frame, SPLIT_COLUMNS, "the split frame")
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.loc[:, list(SPLIT_COLUMNS)].to_csv(tmp, index=False)
    if parameters is not None:
        atomic_write_text(parameters_path(path), json.dumps(parameters, indent=2, sort_keys=True) + "\n")
    return path


def _read_csv(path: Path, columns: Sequence[str], what: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{what} not found", path=path, fix="check the path, or create the split first")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise DataError(
            f"{what} is not a readable CSV ({error})", path=path, fix="delete it and recreate it"
        ) from error
    _require_columns(frame, columns, what, path)
    return frame


def same_split_file(first: str | Path | None, second: str | Path | None) -> bool:
    """Whether two recorded split files are one split: the same path, or files with the same content (as in
    two clones of the repository). An unrecorded (None) split is never the same as anything."""
    if first is None or second is None:
        return False
    first, second = Path(first), Path(second)
    if first.resolve() == second.resolve():
        return True
    return first.is_file() and second.is_file() and first.read_bytes() == second.read_bytes()


def load_split(path: str | Path) -> pd.DataFrame:
    """Read a split CSV written by :func:`save_split`, checking its columns, partitions and image ids."""
    path = Path(path)
    split = _read_csv(path, SPLIT_COLUMNS, "split file")
    _check_partitions(split, "split file", path)
    _check_unique_images(split, "split file", path)
    return split.loc[:, list(SPLIT_COLUMNS)]


def _check_partitions(split: pd.DataFrame, what: str, path: Path) -> None:
    unknown = sorted(set(split["partition"]) - set(PARTITIONS))
    if unknown:
        raise DataError(
            f"{what} has unknown partition value(s) {unknown}; expected {list(PARTITIONS)}",
            path=path,
            fix="restore the original file (delete a split of this project so it is made again)",
        )


def apply_split(
    frame: pd.DataFrame, split_frame: pd.DataFrame, *, source: str | Path | None = None
) -> pd.DataFrame:
    """Copy of ``frame`` with the ``partition`` of each image from ``split_frame`` (merged by image_id).

    Every image of ``frame`` must be in the split; extra split rows are allowed, so a subset of the data
    (a quick run) keeps the partitions of the full split.
    """
    _require_columns(split_frame, ("image_id", "partition"), "the split", source)
    partition_of = split_frame.set_index("image_id")["partition"]
    missing = frame.loc[~frame["image_id"].isin(partition_of.index), "image_id"]
    if len(missing):
        raise DataError(
            f"the split does not cover {len(missing)} of the frame's {len(frame)} images, "
            f"e.g. {list(missing[:5])}: it was made for other data",
            path=source,
            fix="delete the split file so it is made again, or pass another split name",
        )
    result = frame.drop(columns="partition", errors="ignore")
    result["partition"] = result["image_id"].map(partition_of).to_numpy()
    return result


def split_parameters(**kwargs: object) -> dict:
    """The full, JSON-ready keyword arguments of :func:`make_lesion_split` (defaults filled in)."""
    bound = inspect.signature(make_lesion_split).bind(None, **kwargs)
    bound.apply_defaults()
    parameters = {name: value for name, value in bound.arguments.items() if name != "frame"}
    parameters["duplicate_pairs"] = sorted([str(a), str(b)] for a, b in parameters["duplicate_pairs"] or ())
    return parameters


def load_or_create_split(frame: pd.DataFrame, name: str, **kwargs: object) -> pd.DataFrame:
    """Apply the saved split ``name`` if it exists, else make it with ``kwargs`` and save it (CSV + JSON).

    Every notebook therefore sees the same partitions. Asking for other parameters than the saved ones,
    or for images the saved split lacks, raises :class:`DataError` naming the file.
    """
    path = split_path(name)
    parameters = split_parameters(**kwargs)
    if not path.is_file():
        split = make_lesion_split(frame, **kwargs)
        save_split(split, path, parameters)
        return split
    _check_saved_parameters(path, parameters)
    return apply_split(frame, load_split(path), source=path)


def _check_saved_parameters(path: Path, parameters: dict) -> None:
    sidecar = parameters_path(path)
    if not sidecar.is_file():
        return
    try:
        saved = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"split parameters are not valid JSON ({error})", path=sidecar) from error
    changed = {k: (saved.get(k), v) for k, v in parameters.items() if saved.get(k) != v}
    if changed:
        described = ", ".join(f"{k}: saved {old!r}, asked {new!r}" for k, (old, new) in changed.items())
        raise DataError(
            f"the saved split was made with other parameters ({described})",
            path=path,
            fix="use the saved parameters, delete the split files to remake it, or pass another split name",
        )
