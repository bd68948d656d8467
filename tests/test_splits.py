"""Lesion-level splits: no lesion leaks, class proportions, determinism, saved splits, DermaMNIST leak."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers.core import config
from helpers.core.config import CLASS_NAMES
from helpers.core.errors import DataError
from helpers.data import splits
from helpers.data.ham10000 import load_duplicate_pairs, load_ham10000

TOLERANCE_PP = 2.0


def _toy_frame(lesions_per_class: int = 20, images_per_lesion: int = 2) -> pd.DataFrame:
    """A small frame with several images per lesion for every class."""
    rows = []
    for dx in CLASS_NAMES:
        for lesion in range(lesions_per_class):
            for image in range(images_per_lesion):
                rows.append({"image_id": f"{dx}_{lesion}_{image}", "lesion_id": f"L_{dx}_{lesion}", "dx": dx})
    frame = pd.DataFrame(rows)
    frame["label"] = frame["dx"].map(CLASS_NAMES.index)
    return frame


@pytest.fixture
def splits_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(config, "SPLITS_DIR", tmp_path / "splits")
    return tmp_path / "splits"


def test_group_ids_merge_chained_duplicate_pairs() -> None:
    frame = _toy_frame(lesions_per_class=3, images_per_lesion=1)
    pairs = [("nv_0_0", "mel_1_0"), ("mel_1_0", "df_2_0"), ("unknown_image", "nv_1_0")]
    groups = splits.group_ids(frame, pairs).set_axis(frame["image_id"])
    assert groups["nv_0_0"] == groups["mel_1_0"] == groups["df_2_0"]
    assert groups.nunique() == len(frame) - 2


def test_split_keeps_lesions_and_pairs_together_even_across_classes() -> None:
    frame = _toy_frame()
    frame.loc[frame["image_id"] == "nv_0_1", ["dx", "label"]] = ["mel", CLASS_NAMES.index("mel")]
    pairs = [("df_0_0", "vasc_0_0"), ("bcc_3_1", "akiec_4_0")]
    split = splits.make_lesion_split(frame, duplicate_pairs=pairs)
    splits.check_no_lesion_leak(split, pairs)
    partition = split.set_index("image_id")["partition"]
    assert partition["nv_0_0"] == partition["nv_0_1"]
    assert partition["df_0_0"] == partition["vasc_0_0"] and partition["bcc_3_1"] == partition["akiec_4_0"]
    assert set(split["partition"]) == set(splits.PARTITIONS)
    assert split.drop(columns="partition").equals(frame)


def test_check_no_lesion_leak_reports_leaking_lesions_and_pairs() -> None:
    split = splits.make_lesion_split(_toy_frame())
    leaky = split.copy()
    first_lesion = leaky["lesion_id"] == "L_nv_0"
    leaky.loc[first_lesion, "partition"] = ["train", "test"]
    with pytest.raises(DataError, match="1 lesion"):
        splits.check_no_lesion_leak(leaky)
    train_image = split.loc[split["partition"] == "train", "image_id"].iloc[0]
    test_image = split.loc[split["partition"] == "test", "image_id"].iloc[0]
    with pytest.raises(DataError, match="more than one partition"):
        splits.check_no_lesion_leak(split, [(train_image, test_image)])


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_bad_fractions_are_refused(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        splits.make_lesion_split(_toy_frame(), val_fraction=val, test_fraction=test)


def test_bad_frames_are_refused() -> None:
    frame = _toy_frame()
    with pytest.raises(DataError, match="lesion_id"):
        splits.make_lesion_split(frame.drop(columns="lesion_id"))
    with pytest.raises(DataError, match="more than once"):
        splits.make_lesion_split(pd.concat([frame, frame.iloc[:1]]))


def test_split_summary_counts_and_leaks() -> None:
    split = splits.make_lesion_split(_toy_frame())
    summary = splits.split_summary(split)
    assert list(summary.index) == [*CLASS_NAMES, "total"]
    assert summary.loc["total", "total"] == len(split)
    assert (summary[list(splits.PARTITIONS)].sum(axis=1) == summary["total"]).all()
    assert summary["leaked_lesions"].sum() == 0
    split.loc[split["lesion_id"] == "L_df_0", "partition"] = ["train", "val"]
    leaked = splits.split_summary(split)["leaked_lesions"]
    assert leaked["df"] == 1 and leaked["total"] == 1


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    split = splits.make_lesion_split(_toy_frame())
    path = splits.save_split(split, tmp_path / "s.csv", {"seed": 42})
    loaded = splits.load_split(path)
    assert list(loaded.columns) == list(splits.SPLIT_COLUMNS)
    assert loaded.equals(split[list(splits.SPLIT_COLUMNS)].astype(str))
    assert splits.parameters_path(path).read_text().strip().startswith("{")
    assert not list(tmp_path.glob(".*"))


def test_load_split_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        splits.load_split(tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,lesion_id,dx,partition\na,L1,nv,holdout\n")
    with pytest.raises(DataError, match="holdout") as error:
        splits.load_split(bad)
    assert str(bad) in str(error.value)
    bad.write_text("image_id,partition\na,train\n")
    with pytest.raises(DataError, match="lesion_id"):
        splits.load_split(bad)


def test_apply_split_needs_every_image_but_allows_a_subset() -> None:
    frame = _toy_frame()
    split = splits.make_lesion_split(frame)
    subset = splits.apply_split(frame.iloc[::3].assign(partition="stale"), split)
    assert subset["partition"].tolist() == split["partition"].iloc[::3].tolist()
    with pytest.raises(DataError, match="does not cover 1 of") as error:
        splits.apply_split(frame, split.iloc[1:], source="data/splits/x.csv")
    assert "data/splits/x.csv" in str(error.value) and "delete" in str(error.value)


def test_load_or_create_saves_then_reuses(splits_dir: Path) -> None:
    frame = _toy_frame()
    created = splits.load_or_create_split(frame, "toy", seed=3)
    path = splits_dir / "toy.csv"
    assert path.is_file() and splits.parameters_path(path).is_file()
    edited = pd.read_csv(path)
    edited["partition"] = "train"
    edited.to_csv(path, index=False)
    reused = splits.load_or_create_split(frame, "toy", seed=3)
    assert (reused["partition"] == "train").all(), "the saved file must be read, not a fresh split made"
    assert created.drop(columns="partition").equals(reused.drop(columns="partition"))


def test_load_or_create_refuses_other_parameters_or_images(splits_dir: Path) -> None:
    frame = _toy_frame()
    splits.load_or_create_split(frame, "toy")
    with pytest.raises(DataError, match="seed: saved 42, asked 7") as error:
        splits.load_or_create_split(frame, "toy", seed=7)
    assert str(splits_dir / "toy.csv") in str(error.value)
    bigger = pd.concat([frame, frame.iloc[:1].assign(image_id="new_image")], ignore_index=True)
    with pytest.raises(DataError, match="does not cover") as error:
        splits.load_or_create_split(bigger, "toy")
    assert "toy.csv" in str(error.value) and "another split name" in str(error.value)


# ---- real HAM10000 ----


@pytest.fixture(scope="module")
def ham_frame(ham_root: Path) -> pd.DataFrame:
    return load_ham10000(ham_root, verify_images=False)


@pytest.fixture(scope="module")
def duplicate_pairs(ham_root: Path) -> list[tuple[str, str]]:
    return load_duplicate_pairs(ham_root)


@pytest.fixture(scope="module")
def ham_split(ham_frame: pd.DataFrame, duplicate_pairs: list[tuple[str, str]]) -> pd.DataFrame:
    return splits.make_lesion_split(ham_frame, duplicate_pairs=duplicate_pairs)


@pytest.mark.real_data
def test_real_split_has_no_lesion_overlap(ham_split: pd.DataFrame, duplicate_pairs: list) -> None:
    splits.check_no_lesion_leak(ham_split, duplicate_pairs)
    lesion_sets = [set(ham_split.loc[ham_split["partition"] == p, "lesion_id"]) for p in splits.PARTITIONS]
    assert not (
        lesion_sets[0] & lesion_sets[1] or lesion_sets[0] & lesion_sets[2] or lesion_sets[1] & lesion_sets[2]
    )
    assert splits.split_summary(ham_split).loc["total", "leaked_lesions"] == 0


@pytest.mark.real_data
def test_real_split_class_proportions_within_tolerance(ham_split: pd.DataFrame) -> None:
    summary = splits.split_summary(ham_split)
    print(summary.to_string())
    for partition, target in (("train", 70.0), ("val", 15.0), ("test", 15.0)):
        off = (summary[f"{partition}_pct"] - target).abs()
        assert (off <= TOLERANCE_PP).all(), f"{partition}: {off.to_dict()}"
    assert summary.loc["df", "test"] > 0 and summary.loc["vasc", "val"] > 0


@pytest.mark.real_data
def test_real_split_is_deterministic_per_seed(
    ham_frame: pd.DataFrame, ham_split: pd.DataFrame, duplicate_pairs
) -> None:
    again = splits.make_lesion_split(ham_frame, duplicate_pairs=duplicate_pairs)
    other = splits.make_lesion_split(ham_frame, duplicate_pairs=duplicate_pairs, seed=7)
    assert again["partition"].equals(ham_split["partition"])
    assert (other["partition"] != ham_split["partition"]).mean() > 0.2


@pytest.mark.real_data
def test_real_duplicate_pairs_stay_together(ham_split: pd.DataFrame, duplicate_pairs: list) -> None:
    assert len(duplicate_pairs) == 18
    partition = ham_split.set_index("image_id")["partition"]
    assert all(partition[a] == partition[b] for a, b in duplicate_pairs)
    apart = splits.make_lesion_split(ham_split.drop(columns="partition")).set_index("image_id")["partition"]
    assert any(apart[a] != apart[b] for a, b in duplicate_pairs), "without the pairs some would be split"


@pytest.mark.real_data
def test_real_split_round_trip_and_reuse(
    ham_frame: pd.DataFrame, duplicate_pairs: list, splits_dir: Path
) -> None:
    created = splits.load_or_create_split(ham_frame, "ham10000_lesion", duplicate_pairs=duplicate_pairs)
    reused = splits.load_or_create_split(ham_frame, "ham10000_lesion", duplicate_pairs=duplicate_pairs)
    assert reused["partition"].equals(created["partition"])
    loaded = splits.load_split(splits_dir / "ham10000_lesion.csv")
    assert len(loaded) == 10_015 and loaded["partition"].tolist() == created["partition"].tolist()


@pytest.mark.real_data
def test_real_dermamnist_split_leaks_lesions(ham_root: Path, ham_frame: pd.DataFrame) -> None:
    official = pd.read_csv(ham_root / "splits" / "dermamnist_split_by_image_id.csv", dtype=str)
    dermamnist = official.rename(columns={"dermamnist_split": "partition"})  # an image-level split
    assert dermamnist["partition"].value_counts().to_dict() == {"train": 7007, "test": 2005, "val": 1003}
    assert len(splits.lesion_leaks(dermamnist)) == 1006
    with pytest.raises(DataError, match="1006 lesion"):
        splits.check_no_lesion_leak(dermamnist)
    applied = splits.apply_split(ham_frame, dermamnist)
    assert applied["partition"].notna().all()
