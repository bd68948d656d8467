"""The committed released checkpoint: complete, small, loadable with Keras 3 alone, and the very model whose
external scores bench/results reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.core import config
from helpers.evaluation import evaluate_checkpoint, evaluation_set
from helpers.evaluation.operating_point import operating_point_path
from helpers.models import load_checkpoint
from helpers.models.checkpoints import list_checkpoints, read_metadata, resolve_checkpoint

pytestmark = pytest.mark.release

MAX_BYTES = 10 * 2**20


@pytest.fixture(scope="module")
def release() -> Path:
    (checkpoint,) = list_checkpoints(config.RELEASE_DIR)
    return checkpoint


def release_record(checkpoint: Path) -> dict:
    """The latest bench/accuracy JSON that scored the released checkpoint on the external set (the run that
    trained it, or a --score run)."""
    for path in sorted(config.BENCH_RESULTS_DIR.glob("accuracy-*.json"), reverse=True):
        record = json.loads(path.read_text())
        if Path(record["checkpoint"]).name == checkpoint.name and "external" in record["metrics"]:
            return record
    raise AssertionError(f"no bench/results/accuracy-*.json scores the release {checkpoint.name} externally")


def test_release_is_complete_small_and_the_default(release, tmp_path, monkeypatch) -> None:
    assert release.stat().st_size <= MAX_BYTES
    metadata = read_metadata(release)
    assert metadata["task"] == "multiclass" and set(metadata["trained_on"]) == {"train", "val", "test"}
    assert operating_point_path(release).is_file()
    assert "CC BY-NC 4.0" in (config.RELEASE_DIR / "README.md").read_text()
    monkeypatch.setattr(config, "MODELS_DIR", tmp_path / "nothing_trained_here")
    assert resolve_checkpoint("") == release  # a fresh clone predicts without training


@pytest.mark.real_data
@pytest.mark.slow
def test_release_reproduces_its_reported_external_score(release, shared_dir) -> None:
    record = release_record(release)
    model, metadata = load_checkpoint(release)
    external = evaluation_set(
        "isic2018",
        metadata=metadata,
        data_root=shared_dir / "data" / "HAM10000",
        path=shared_dir / "data" / "ISIC2018_Task3_external_val",
    )
    result = evaluate_checkpoint(model, metadata, external, n_bootstrap=10, save=False)
    reported = record["metrics"]["external"]["balanced_accuracy"]
    assert result["summary"]["balanced_accuracy"][0] == pytest.approx(reported[0], abs=1e-6)
