"""Decide which HAM10000-layout folder a run reads (the real data, a given path, or the synthetic demo set)
and load it with its lesion-level split, the same way in every notebook, the CLI and the benchmarks.

Falling back to demo data is loud on purpose, so nobody mistakes its numbers for medical results; names of
what a run on demo data writes (splits, figures, run names) start with ``demo_``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from helpers.core import config
from helpers.core.errors import DataError
from helpers.data.demo import is_demo_dataset, make_demo_dataset
from helpers.data.ham10000 import METADATA_FILE, load_duplicate_pairs, load_ham10000
from helpers.data.splits import default_split_name, load_or_create_split, split_path

logger = logging.getLogger(__name__)

DEMO_BANNER = "USING SYNTHETIC DEMO DATA - results are meaningless for medicine"
NO_DATA_BANNER = f"NO REAL DATA FOUND - {DEMO_BANNER}"
MISSING_DATA_FIX = (
    "run `skinlesion download` to fetch HAM10000 from Harvard Dataverse, or set SKINLESION_DATA to a folder "
    f"that holds {METADATA_FILE} and the HAM10000_images_part_1/2 folders"
)


@dataclass(frozen=True)
class DataSource:
    """A dataset folder in the HAM10000 layout, whether it is synthetic, and a one-line description."""

    root: Path
    is_demo: bool
    description: str

    def scoped(self, name: str) -> str:
        """``name`` as the outputs of a run on this data are called (``demo_`` first on synthetic data)."""
        return data_scoped(name, self.is_demo)


def data_scoped(name: str, is_demo: bool) -> str:
    """``name`` prefixed with ``demo_`` on synthetic data, so demo splits/figures never replace real ones."""
    return f"demo_{name}" if is_demo and not name.startswith("demo") else name


def _announce_demo(reason: str, banner: str = DEMO_BANNER) -> None:
    """Warn in the log and print a banner that cannot be missed in a notebook or terminal."""
    line = "!" * len(banner)
    logger.warning("%s (%s)", banner, reason)
    print(f"{line}\n{banner}\n{reason}\n{line}", flush=True)


def _demo_source(reason: str, banner: str = DEMO_BANNER) -> DataSource:
    """The (generated or reused) default demo dataset, announced loudly."""
    root = make_demo_dataset(config.DEMO_DIR)
    _announce_demo(reason, banner)
    return DataSource(root=root, is_demo=True, description=f"SYNTHETIC demo data at {root} ({reason})")


def _folder_source(root: Path, origin: str) -> DataSource:
    """A dataset folder that exists; still announced loudly if it turns out to be demo data."""
    if is_demo_dataset(root):
        _announce_demo(f"{root} holds synthetic demo data")
        return DataSource(root=root, is_demo=True, description=f"SYNTHETIC demo data at {root} ({origin})")
    return DataSource(root=root, is_demo=False, description=f"HAM10000 at {root} ({origin})")


def resolve_data_root(spec: str | Path = "auto") -> DataSource:
    """Resolve ``spec`` to a dataset folder: "auto" (real data, else demo), "demo", or a path to a dataset.

    "auto" looks where :func:`helpers.core.config.ham10000_root` looks (SKINLESION_DATA, data/HAM10000, the
    shared copy). A path must contain HAM10000_metadata.csv, else :class:`DataError` says how to get it.
    """
    if spec == "auto":
        real_root = config.ham10000_root()
        if real_root is None:
            return _demo_source(
                f"no {METADATA_FILE} under SKINLESION_DATA, {config.DATA_DIR / 'HAM10000'} or "
                f"SKINLESION_SHARED; to use real data, {MISSING_DATA_FIX}",
                NO_DATA_BANNER,
            )
        return _folder_source(real_root, "found automatically")
    if spec == "demo":
        return _demo_source("requested with data='demo'")
    root = Path(spec).expanduser().resolve()
    if not (root / METADATA_FILE).is_file():
        raise DataError(
            f"No {METADATA_FILE} in the data folder {root}", path=root / METADATA_FILE, fix=MISSING_DATA_FIX
        )
    return _folder_source(root, "given explicitly")


def split_dataset(
    source: DataSource,
    split_name: str | None = None,
    *,
    seed: int = config.DEFAULT_SPLIT_SEED,
    val_fraction: float = config.DEFAULT_HOLDOUT_FRACTION,
    test_fraction: float = config.DEFAULT_HOLDOUT_FRACTION,
) -> tuple[pd.DataFrame, Path]:
    """The dataset with the ``partition`` of its saved lesion-level split (made now if it does not exist,
    near-duplicate pairs kept together; named by its seed unless ``split_name`` is given), and the split
    file. Notebooks 01-03, ``skinlesion split`` and the benchmarks all split through here, so they agree on
    every image's partition."""
    frame = load_ham10000(source.root)
    split_file = split_path(source.scoped(split_name or default_split_name(seed)))
    split = load_or_create_split(
        frame,
        split_file.stem,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        duplicate_pairs=load_duplicate_pairs(source.root),
    )
    return split, split_file
