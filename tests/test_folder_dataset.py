"""Folder-per-class loader: the real binary set, layouts without a split level, HAM10000 overlap, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from builders import write_noise_image

from helpers.core.errors import DataError
from helpers.data.folders import CROSSREF_FILE, drop_ham10000_overlap, load_folder_dataset
from helpers.data.ham10000 import load_ham10000
from helpers.data.validation import FRAME_COLUMNS, skip_report


@pytest.mark.real_data
def test_real_binary_set(binary_root: Path, ham_root: Path) -> None:
    frame = load_folder_dataset(binary_root)
    counts = frame.groupby(["folder_split", "malignant"]).size().to_dict()
    assert counts == {("train", 0): 1440, ("train", 1): 1197, ("test", 0): 360, ("test", 1): 300}
    assert list(frame.columns) == [*FRAME_COLUMNS, "folder_split", "ham_image_id", "ham_lesion_id"]
    assert frame["image_path"].map(os.path.isfile).all()
    assert (frame["label"] == -1).all() and (frame["dx"] == "").all() and set(frame["source"]) == {"folder"}
    assert frame["ham_image_id"].notna().sum() == 2488
    assert frame.set_index("image_id").loc["train/benign/100", "ham_image_id"] == "ISIC_0027338"
    kept, removed = drop_ham10000_overlap(frame, load_ham10000(ham_root, verify_images=False))
    assert (len(kept), len(removed)) == (809, 2488)
    assert kept["ham_lesion_id"].isna().all()


def make_folder_root(root: Path, splits: tuple[str, ...] = ("train", "test")) -> Path:
    """Two images per class per split (one JPEG, one PNG); ``splits=("",)`` gives no split level."""
    for split in splits:
        for class_name in ("benign", "malignant"):
            folder = root / split / class_name
            write_noise_image(folder / "1.jpg", 1, (12, 12))
            write_noise_image(folder / "2.png", 2, (12, 12))
    return root


def test_split_layout(tmp_path: Path) -> None:
    frame = load_folder_dataset(make_folder_root(tmp_path))
    assert frame["image_id"].tolist() == [
        f"{split}/{name}/{stem}"
        for split in ("test", "train")
        for name in ("benign", "malignant")
        for stem in "12"
    ]
    assert frame["folder_split"].tolist() == ["test"] * 4 + ["train"] * 4
    assert frame["malignant"].tolist() == [0, 0, 1, 1] * 2
    assert (frame["lesion_id"] == frame["image_id"]).all()
    assert "ham_lesion_id" not in frame.columns


def test_layout_without_split_level(tmp_path: Path) -> None:
    frame = load_folder_dataset(make_folder_root(tmp_path, splits=("",)))
    assert frame["image_id"].tolist() == ["benign/1", "benign/2", "malignant/1", "malignant/2"]
    assert set(frame["folder_split"]) == {""}


def test_crossref_adds_ham_columns_and_overlap_is_dropped(tmp_path: Path) -> None:
    root = make_folder_root(tmp_path)
    (root / CROSSREF_FILE).write_text(
        "split,label,file,sim,ham_image_id,lesion_id,dx\n"
        "train,benign,1.jpg,0.999,ISIC_1,HAM_1,nv\n"
        "train,malignant,2.png,0.999,ISIC_2,HAM_2,mel\n"
        "test,benign,1.jpg,0.5,,,\n"
    )
    frame = load_folder_dataset(root).set_index("image_id")
    assert frame.loc["train/benign/1", "ham_lesion_id"] == "HAM_1"
    assert frame.loc["train/malignant/2", "ham_image_id"] == "ISIC_2"
    assert frame["ham_lesion_id"].notna().sum() == 2
    ham = pd.DataFrame({"image_id": ["ISIC_1", "ISIC_7"], "lesion_id": ["HAM_1", "HAM_2"]})
    kept, removed = drop_ham10000_overlap(frame.reset_index(), ham)
    assert sorted(removed["image_id"]) == ["train/benign/1", "train/malignant/2"]
    assert len(kept) == 6


def test_overlap_needs_crossref(tmp_path: Path) -> None:
    frame = load_folder_dataset(make_folder_root(tmp_path))
    with pytest.raises(DataError, match=CROSSREF_FILE):
        drop_ham10000_overlap(frame, frame)


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_folder_dataset(tmp_path / "absent")
    with pytest.raises(DataError, match="No benign/ or malignant/"):
        load_folder_dataset(tmp_path)
    (tmp_path / "train" / "benign").mkdir(parents=True)
    (tmp_path / "train" / "benign" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="Empty class folder") as error:
        load_folder_dataset(tmp_path)
    assert str(tmp_path / "train" / "benign") in str(error.value)


def test_damaged_image_raises_or_is_skipped(tmp_path: Path) -> None:
    root = make_folder_root(tmp_path)
    (root / "test" / "malignant" / "1.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="test/malignant/1: empty file"):
        load_folder_dataset(root)
    frame = load_folder_dataset(root, on_error="skip")
    assert len(frame) == 7
    assert skip_report(frame).to_frame()["image_id"].tolist() == ["test/malignant/1"]


def test_same_stem_twice_is_a_duplicate(tmp_path: Path) -> None:
    root = make_folder_root(tmp_path, splits=("",))
    write_noise_image(root / "benign" / "1.png", 3, (12, 12))
    with pytest.raises(DataError, match="benign/1 .2 rows."):
        load_folder_dataset(root)
