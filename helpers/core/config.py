"""Project paths, environment overrides and the fixed class vocabulary (diagnoses, tasks).

Every other module reads locations from here so that notebooks, the CLI and tests agree on them.
"""

from __future__ import annotations

import os
from pathlib import Path

CLASS_NAMES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
"""The seven HAM10000 diagnoses in the fixed order used for label indices and model outputs."""

MALIGNANT_CLASSES: frozenset[str] = frozenset({"akiec", "bcc", "mel"})
"""Diagnoses counted as malignant when a 7-class model is read as malignant-vs-benign."""

BINARY_CLASS_NAMES: tuple[str, ...] = ("benign", "malignant")
"""The two classes of a binary model, in output order: its single sigmoid unit is P(malignant)."""

TASK_CLASSES: dict[str, tuple[str, ...]] = {"multiclass": CLASS_NAMES, "binary": BINARY_CLASS_NAMES}
"""The class set of each task, in output order: the one definition of what a checkpoint of a task predicts."""

TASKS: tuple[str, ...] = tuple(TASK_CLASSES)

DEFAULT_IMAGE_SIZE: tuple[int, int] = (150, 200)
"""(height, width) of model inputs unless a run says otherwise: the 4:3 aspect of the 600x450 originals and
the 200x150 shared copy."""

DEFAULT_SPLIT_SEED = 42
DEFAULT_HOLDOUT_FRACTION = 0.15
"""The lesion-level split every run uses unless it says otherwise: 15% of the lesions for validation, 15% for
test, drawn with seed 42."""

HAM10000_METADATA_FILE = "HAM10000_metadata.csv"
"""The metadata CSV at the root of a HAM10000 folder (lesion_id, image_id, dx, ...); it marks the folder."""

CLASS_DESCRIPTIONS: dict[str, str] = {
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}

PROJECT_ROOT: Path = Path(os.environ.get("SKINLESION_ROOT", Path(__file__).resolve().parents[2])).resolve()
DATA_DIR: Path = PROJECT_ROOT / "data"
MODELS_DIR: Path = PROJECT_ROOT / "models"
RELEASE_DIR: Path = Path(__file__).resolve().parents[2] / "models" / "release"
"""The released checkpoints, committed with the code (so found beside it, wherever SKINLESION_ROOT points)."""
FIGURES_DIR: Path = PROJECT_ROOT / "figures"
RUNS_DIR: Path = PROJECT_ROOT / "runs"
CONFIGS_DIR: Path = PROJECT_ROOT / "configs"
NOTEBOOKS_DIR: Path = PROJECT_ROOT / "notebooks"
SPLITS_DIR: Path = DATA_DIR / "splits"
CACHE_DIR: Path = DATA_DIR / "cache"
DEMO_DIR: Path = DATA_DIR / "demo"
TRACKING_FILE: Path = PROJECT_ROOT / "Tracking.md"
"""The committed run log: one row per run on real data."""
SYNTHETIC_TRACKING_FILE: Path = RUNS_DIR / "Tracking-synthetic.md"
"""Where runs on the synthetic demo data are logged instead (git-ignored, like all of runs/)."""
FEATURE_CACHE_DIR: Path = CACHE_DIR / "features"
BENCH_RESULTS_DIR: Path = PROJECT_ROOT / "bench" / "results"
"""The benchmarks' JSON records (bench/accuracy.py, throughput.py, demo_probe.py), committed."""


def shared_dir() -> Path | None:
    """The read-only shared folder (real data and weights) from ``SKINLESION_SHARED``, if it exists."""
    value = os.environ.get("SKINLESION_SHARED")
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    return path if path.is_dir() else None


def ham10000_root() -> Path | None:
    """Where the real HAM10000 lives: ``SKINLESION_DATA``, else ``data/HAM10000``, else the shared copy."""
    candidates: list[Path] = []
    if os.environ.get("SKINLESION_DATA"):
        candidates.append(Path(os.environ["SKINLESION_DATA"]).expanduser())
    candidates.append(DATA_DIR / "HAM10000")
    shared = shared_dir()
    if shared is not None:
        candidates.append(shared / "data" / "HAM10000")
    for path in candidates:
        if (path / HAM10000_METADATA_FILE).is_file():
            return path.resolve()
    return None


def project_path(path: str | Path) -> Path:
    """``path`` with a relative path taken from the project root (notebooks run inside notebooks/)."""
    return PROJECT_ROOT / Path(path).expanduser()
