"""Synthetic demo dataset: HAM10000 layout, determinism, reuse, atomic writes, aligned masks, learnability."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from helpers.core.config import CLASS_NAMES
from helpers.core.errors import DataError
from helpers.data import demo as demo_data
from helpers.data.demo import (
    IMAGE_FOLDERS,
    MARKER_FILE,
    MASK_FOLDER,
    METADATA_FILE,
    PARAMETERS_FILE,
    is_demo_dataset,
    make_demo_dataset,
)
from helpers.data.ham10000 import load_ham10000

SMALL = {"lesions_per_class": 2, "images_per_lesion": (1, 2), "image_size": (60, 80)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The default demo dataset and the seconds it took to generate."""
    start = time.perf_counter()
    root = make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo")
    return root, time.perf_counter() - start


@pytest.fixture(scope="module")
def frame(demo: tuple[Path, float]) -> pd.DataFrame:
    return load_ham10000(demo[0])


def _file_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.md5(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_generation_is_fast(demo: tuple[Path, float]) -> None:
    print(f"default demo dataset generated in {demo[1]:.2f} s")
    assert demo[1] < 10


def test_official_layout(demo: tuple[Path, float], frame: pd.DataFrame) -> None:
    root = demo[0]
    metadata = pd.read_csv(root / METADATA_FILE)
    assert list(metadata.columns) == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    assert metadata["lesion_id"].str.fullmatch(r"HAM_9\d{6}").all()
    assert metadata["image_id"].str.fullmatch(r"ISIC_9\d{6}").all() and metadata["image_id"].is_unique
    assert set(metadata["dx_type"]) == {"synthetic"}
    assert is_demo_dataset(root) and "SYNTHETIC" in (root / MARKER_FILE).read_text()
    assert "SYNTHETIC" in (root / "README.txt").read_text()
    for folder in IMAGE_FOLDERS:
        assert 0.4 < len(list((root / folder).glob("ISIC_9*.jpg"))) / len(metadata) < 0.6
    assert len(frame) == len(metadata) and frame["mask_path"].notna().all()
    assert {Path(path).parent.name for path in frame["image_path"]} == set(IMAGE_FOLDERS)
    assert all(Path(path).parent.name == MASK_FOLDER for path in frame["mask_path"])
    image = cv2.imread(frame["image_path"].iloc[0])
    assert image.shape == (150, 200, 3)


def test_all_classes_imbalanced_like_ham(frame: pd.DataFrame) -> None:
    lesions = frame.drop_duplicates("lesion_id")["dx"].value_counts()
    assert set(lesions.index) == set(CLASS_NAMES)
    assert lesions.min() >= 8
    assert lesions.idxmax() == "nv" and lesions["nv"] >= 2 * lesions.drop("nv").max()


def test_several_differing_images_per_lesion(frame: pd.DataFrame) -> None:
    per_lesion = frame.groupby("lesion_id")
    assert per_lesion["dx"].nunique().eq(1).all()
    counts = per_lesion.size()
    assert counts.min() >= 1 and counts.max() == 3 and (counts > 1).mean() > 0.4
    first, second = frame[frame["lesion_id"] == counts.idxmax()]["image_path"].iloc[:2]
    assert Path(first).read_bytes() != Path(second).read_bytes()


def _edge_contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """Colour difference between thin bands just inside and just outside the mask border."""
    kernel, mask_u8 = np.ones((3, 3), np.uint8), mask.astype(np.uint8)

    def band(grow: Callable, near: int, far: int) -> np.ndarray:
        return grow(mask_u8, kernel, iterations=near) != grow(mask_u8, kernel, iterations=far)

    inner, outer = band(cv2.erode, 2, 5), band(cv2.dilate, 2, 5)
    return float(np.abs(image[inner].mean(0) - image[outer].mean(0)).sum())


def test_masks_are_binary_and_outline_the_lesion(frame: pd.DataFrame) -> None:
    contrasts = []
    for image_path, mask_path in zip(frame["image_path"], frame["mask_path"], strict=True):
        assert Path(mask_path).read_bytes()[24] == 1  # PNG IHDR bit depth: 1-bit, like the real masks
        mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
        assert set(np.unique(mask)) == {0, 255}
        image = cv2.imread(image_path).astype(np.float32) / 255
        aligned, shifted = (
            _edge_contrast(image, mask > 0),
            _edge_contrast(image, np.roll(mask > 0, 12, axis=1)),
        )
        assert aligned > shifted, f"mask of {image_path} does not follow the lesion border"
        contrasts.append(aligned)
    assert np.median(contrasts) > 0.3


def _colour_histogram(path: str) -> np.ndarray:
    hsv = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2HSV)
    return (
        cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel() / hsv[..., 0].size
    )


def test_classes_are_learnable_from_colour_on_held_out_lesions(frame: pd.DataFrame) -> None:
    features = np.stack([_colour_histogram(path) for path in frame["image_path"]])
    train, test = next(
        GroupShuffleSplit(test_size=0.3, random_state=0).split(features, groups=frame["lesion_id"])
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(
        features[train], frame["label"].iloc[train]
    )
    accuracy = model.score(features[test], frame["label"].iloc[test])
    print(f"colour-histogram logistic regression, held-out lesions: accuracy {accuracy:.2f}")
    assert accuracy > 0.6


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = _file_digests(make_demo_dataset(tmp_path / "a", seed=3, **SMALL))
    second = _file_digests(make_demo_dataset(tmp_path / "b", seed=3, **SMALL))
    other = _file_digests(make_demo_dataset(tmp_path / "c", seed=4, **SMALL))
    assert first == second
    assert first[METADATA_FILE] != other[METADATA_FILE]


def test_reuses_matching_dataset_and_rebuilds_on_new_parameters(tmp_path: Path) -> None:
    root = make_demo_dataset(tmp_path / "demo", **SMALL)
    before = (root / METADATA_FILE).stat().st_mtime_ns
    assert make_demo_dataset(root, **SMALL) == root
    assert (root / METADATA_FILE).stat().st_mtime_ns == before
    make_demo_dataset(root, **{**SMALL, "lesions_per_class": 3})
    assert json.loads((root / PARAMETERS_FILE).read_text())["lesions_per_class"] == 3
    assert len(pd.read_csv(root / METADATA_FILE)["lesion_id"].unique()) > 14
    make_demo_dataset(root, **{**SMALL, "lesions_per_class": 3}, overwrite=True)
    assert (root / METADATA_FILE).stat().st_mtime_ns != before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo"]


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_render(*args: object) -> None:
        calls.append(args)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        return real_render(*args)

    real_render = demo_data.render_image
    monkeypatch.setattr(demo_data, "render_image", failing_render)
    with pytest.raises(RuntimeError, match="disk full"):
        make_demo_dataset(tmp_path / "demo", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_folder_that_is_not_demo_data(tmp_path: Path) -> None:
    real = tmp_path / "HAM10000"
    real.mkdir()
    (real / METADATA_FILE).write_text("lesion_id,image_id,dx,dx_type,age,sex,localization\n")
    with pytest.raises(DataError, match="not a synthetic demo dataset") as error:
        make_demo_dataset(real, **SMALL)
    assert str(real) in str(error.value)
    assert [path.name for path in real.iterdir()] == [METADATA_FILE]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["HAM10000"]
    assert not is_demo_dataset(real)


@pytest.mark.parametrize(
    "bad", [{"lesions_per_class": 0}, {"images_per_lesion": (2, 1)}, {"image_size": (10, 200)}]
)
def test_rejects_bad_parameters(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ValueError, match="make_demo_dataset needs"):
        make_demo_dataset(tmp_path / "demo", **bad)
