"""Threshold tuning for a target sensitivity and the operating-point JSON beside a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.core.errors import CheckpointError
from helpers.evaluation.operating_point import (
    DEFAULT_THRESHOLD,
    copy_operating_point,
    load_operating_point,
    operating_point_path,
    save_operating_point,
    saved_operating_point,
    sensitivity_specificity,
    threshold_for_sensitivity,
)

# five positives, five negatives; one negative (0.65) sits between the 3rd and 4th positive
Y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.65, 0.5, 0.4, 0.2, 0.1])


def test_threshold_hits_target_sensitivity_exactly() -> None:
    threshold = threshold_for_sensitivity(Y, SCORES, target=0.8)
    assert threshold == 0.6
    assert sensitivity_specificity(Y, SCORES, threshold) == (0.8, 0.8)


def test_threshold_maximises_specificity_at_the_target() -> None:
    threshold = threshold_for_sensitivity(Y, SCORES, target=0.8)
    _, best_specificity = sensitivity_specificity(Y, SCORES, threshold)
    for candidate in np.unique(SCORES):
        sensitivity, specificity = sensitivity_specificity(Y, SCORES, candidate)
        if sensitivity >= 0.8:
            assert specificity <= best_specificity
            assert candidate <= threshold


@pytest.mark.parametrize(("target", "expected"), [(0.2, 0.9), (0.6, 0.7), (1.0, 0.3)])
def test_threshold_for_other_targets(target: float, expected: float) -> None:
    assert threshold_for_sensitivity(Y, SCORES, target) == expected


def test_tied_scores_are_all_called_positive() -> None:
    y = [1, 1, 1, 0]
    scores = [0.9, 0.5, 0.5, 0.5]
    threshold = threshold_for_sensitivity(y, scores, target=0.5)  # 0.9 alone gives 1/3; the tie gives 3/3
    assert threshold == 0.5
    assert sensitivity_specificity(y, scores, threshold) == (1.0, 0.0)


def test_threshold_with_only_positives() -> None:
    assert threshold_for_sensitivity([1, 1, 1, 1], [0.9, 0.8, 0.7, 0.6], target=0.5) == 0.8


def test_threshold_needs_positives_and_a_valid_target() -> None:
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_sensitivity([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="target"):
        threshold_for_sensitivity(Y, SCORES, target=1.5)


def test_sensitivity_specificity_nan_for_absent_class() -> None:
    sensitivity, specificity = sensitivity_specificity([0, 0, 0], [0.2, 0.6, 0.7], 0.5)
    assert np.isnan(sensitivity) and specificity == pytest.approx(1 / 3)


def test_operating_point_path_sits_beside_the_checkpoint() -> None:
    assert operating_point_path("models/run1/best.keras") == Path("models/run1/best.operating_point.json")


def test_operating_point_round_trip(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.keras"
    path = operating_point_path(checkpoint)
    val_metrics = {"sensitivity": np.float64(0.91), "confusion": np.array([[3, 1], [0, 4]]), "n": np.int64(8)}
    save_operating_point(
        path, threshold=np.float32(0.25), target_sensitivity=0.9, temperature=1.7,
        val_metrics=val_metrics, checkpoint=checkpoint, class_bias=np.array([0.5, -0.5]),
    )  # fmt: skip
    record = load_operating_point(path)
    assert record["threshold"] == pytest.approx(0.25)
    assert record["target_sensitivity"] == 0.9 and record["temperature"] == 1.7
    assert record["checkpoint"] == "model.keras"
    assert record["val_metrics"] == {"sensitivity": 0.91, "confusion": [[3, 1], [0, 4]], "n": 8}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    saved = saved_operating_point(checkpoint)
    assert saved == {
        "threshold": pytest.approx(0.25), "temperature": 1.7, "class_bias": [0.5, -0.5],
        "malignant_after_bias": False,
    }  # fmt: skip


def test_a_first_format_point_keeps_its_after_bias_threshold_also_when_copied(tmp_path: Path) -> None:
    """Files saved before P(malignant) moved ahead of the class bias fitted their threshold after it: they
    are read, applied and copied (a release takes its validation run's point) that way."""
    checkpoint, release = tmp_path / "model.keras", tmp_path / "release.keras"
    options = {"threshold": 0.3, "target_sensitivity": 0.9, "temperature": 1.0, "val_metrics": {}}
    path = save_operating_point(
        operating_point_path(checkpoint), checkpoint=checkpoint, class_bias=[0.1, -0.1],
        malignant_after_bias=True, **options,
    )  # fmt: skip
    assert json.loads(path.read_text())["format"] == "skinlesion-operating-point-v1"
    assert saved_operating_point(checkpoint)["malignant_after_bias"] is True
    copy_operating_point(checkpoint, release)
    assert saved_operating_point(release)["malignant_after_bias"] is True
    save_operating_point(operating_point_path(checkpoint), checkpoint=checkpoint, **options)
    assert saved_operating_point(checkpoint)["malignant_after_bias"] is False


def test_operating_point_without_class_bias_reads_as_no_correction(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.keras"
    save_operating_point(
        operating_point_path(checkpoint), threshold=0.3, target_sensitivity=0.9, temperature=1.0,
        val_metrics={}, checkpoint=checkpoint,
    )  # fmt: skip
    assert saved_operating_point(checkpoint)["class_bias"] is None


def test_operating_point_with_a_broken_class_bias_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.keras"
    path = save_operating_point(
        operating_point_path(checkpoint), threshold=0.3, target_sensitivity=0.9, temperature=1.0,
        val_metrics={}, checkpoint=checkpoint, class_bias=[0.1, 0.2],
    )  # fmt: skip
    path.write_text(path.read_text().replace("0.2", '"high"'))
    with pytest.raises(CheckpointError, match=r"class_bias is not a list of finite numbers(.|\n)*File: "):
        saved_operating_point(checkpoint)


def test_saved_operating_point_defaults_without_a_file(tmp_path: Path) -> None:
    default = {"threshold": 0.5, "temperature": 1.0, "class_bias": None, "malignant_after_bias": False}
    assert saved_operating_point(tmp_path / "model.keras") == default
    assert DEFAULT_THRESHOLD == 0.5


def test_save_operating_point_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="temperature"):
        save_operating_point(
            tmp_path / "x.json", threshold=0.3, target_sensitivity=0.9, temperature=0.0,
            val_metrics={}, checkpoint="x.keras",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ('{"threshold": 0.3}', "format"),
        ("[]", "format"),
    ],
)
def test_load_operating_point_explains_bad_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "m.operating_point.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CheckpointError, match=message) as error:
        load_operating_point(path)
    assert str(path) in str(error.value) and "Fix:" in str(error.value)


def test_load_operating_point_reports_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "m.operating_point.json"
    path.write_text(json.dumps({"format": "skinlesion-operating-point-v1", "threshold": 0.3}))
    with pytest.raises(CheckpointError, match="temperature"):
        load_operating_point(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": "abc"}, "finite numbers"),
        ({"threshold": float("nan")}, "finite numbers"),
        ({"temperature": 0}, "temperature > 0"),
        ({"target_sensitivity": 1.5}, "target_sensitivity <= 1"),
        ({"class_bias": [0.1, None]}, "class_bias is not a list"),
    ],
)
def test_load_operating_point_checks_the_values(tmp_path: Path, change: dict, message: str) -> None:
    path = save_operating_point(
        tmp_path / "m.operating_point.json", threshold=0.3, target_sensitivity=0.9, temperature=1.0,
        val_metrics={}, checkpoint="m.h5",
    )  # fmt: skip
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(CheckpointError, match=message) as error:
        load_operating_point(path)
    assert str(path) in str(error.value) and "Fix:" in str(error.value)


def test_a_class_bias_must_have_one_value_per_class_of_the_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.h5"
    checkpoint.with_suffix(".json").write_text(json.dumps({"class_names": list("abcdefg")}))
    save_operating_point(
        operating_point_path(checkpoint), threshold=0.3, target_sensitivity=0.9, temperature=1.0,
        val_metrics={}, checkpoint=checkpoint, class_bias=[0.1, -0.1],
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="class_bias has 2 values but the checkpoint has 7 classes"):
        saved_operating_point(checkpoint)


def test_an_operating_point_of_another_model_is_refused(tmp_path: Path) -> None:
    """The point records when its model was saved: copied beside another model (same classes, so the class
    count cannot tell), it is refused; copied on purpose (a release), it names the new model."""
    checkpoint, other = tmp_path / "model.h5", tmp_path / "other.h5"
    for path, saved in ((checkpoint, "2026-12-05T10:00:00+00:00"), (other, "2026-12-05T11:00:00+00:00")):
        path.with_suffix(".json").write_text(json.dumps({"class_names": list("abcdefg"), "created": saved}))
    options = {"threshold": 0.3, "target_sensitivity": 0.9, "temperature": 1.0, "val_metrics": {}}
    point = save_operating_point(operating_point_path(checkpoint), checkpoint=checkpoint, **options)
    assert saved_operating_point(checkpoint)["threshold"] == 0.3
    operating_point_path(other).write_text(point.read_text())
    with pytest.raises(CheckpointError, match=r"written for a model saved 2026-12-05T10:00(.|\n)*other\.op"):
        saved_operating_point(other)
    copy_operating_point(checkpoint, other)
    assert saved_operating_point(other)["threshold"] == 0.3
    record = json.loads(point.read_text())
    operating_point_path(other).write_text(json.dumps({**record, "checkpoint_saved": None}))
    assert saved_operating_point(other)["threshold"] == 0.3  # written before the record: not checked
