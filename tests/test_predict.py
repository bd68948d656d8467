"""``skinlesion predict``: one row per image, bad images reported in place, saved operating point, errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import save_operating_point_beside, save_untrained_checkpoint, write_noise_image

from helpers.apps import cli
from helpers.apps.predict import image_paths, predict_command
from helpers.core import config
from helpers.core.errors import CheckpointError, DataError
from helpers.data.pipeline import load_image_array
from helpers.evaluation.calibration import calibrate
from helpers.evaluation.inference import predict_batch, predict_images, probability_column
from helpers.evaluation.metrics import malignant_probability
from helpers.evaluation.operating_point import operating_point_path
from helpers.models.checkpoints import load_checkpoint

SIZE = (32, 40)
GOOD = ("a.jpg", "b.png", "sub/c.jpg")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    return save_untrained_checkpoint(folder / "light_cnn_v1_01_0.500.h5", input_size=SIZE)


@pytest.fixture
def images(tmp_path) -> Path:
    """Three good images (one in a subfolder), a truncated JPEG and a text file named .jpg."""
    folder = tmp_path / "images"
    for index, name in enumerate(GOOD):
        write_noise_image(folder / name, index, (60, 80))
    data = (folder / "a.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.jpg").write_text("not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def _args(**overrides) -> argparse.Namespace:
    values = {"images": [], "image_dir": None, "output": None, "batch_size": 2, "model": None}
    return argparse.Namespace(**{**values, **overrides})


def test_bad_images_get_an_error_row_and_the_rest_is_predicted(checkpoint, images):
    paths = image_paths([], images)
    assert sorted(p.name for p in paths) == ["a.jpg", "b.png", "c.jpg", "text.jpg", "truncated.jpg"]
    table = predict_images(checkpoint, paths, batch_size=2, progress=False).set_index("path")
    probabilities = [probability_column(name) for name in config.CLASS_NAMES]
    good = table.loc[[str(images / name) for name in GOOD]]
    bad = table.loc[[str(images / "truncated.jpg"), str(images / "text.jpg")]]
    assert (good["error"] == "").all()
    np.testing.assert_allclose(good[probabilities].sum(axis=1), 1, atol=1e-5)
    assert set(good["predicted"]) <= set(config.CLASS_NAMES)
    assert bad["error"].str.contains("Unusable image").all()
    assert bad[probabilities + ["p_malignant"]].isna().all().all() and (bad["decision"] == "").all()
    expected = np.where(good["p_malignant"] >= 0.5, "malignant", "benign")  # no operating point: 0.5
    assert good["decision"].tolist() == expected.tolist()


def test_saved_threshold_and_temperature_are_applied(checkpoint, images):
    paths = [images / name for name in GOOD]
    model, _ = load_checkpoint(checkpoint)
    raw = predict_batch(model, load_image_array(paths, SIZE, progress=False))
    p_malignant = malignant_probability(calibrate(raw, 0.05))
    threshold = float(np.median(p_malignant))
    save_operating_point_beside(checkpoint, threshold=threshold, temperature=0.05)
    try:
        table = predict_images(checkpoint, paths, progress=False)
    finally:
        operating_point_path(checkpoint).unlink()
    np.testing.assert_allclose(table["p_malignant"], p_malignant, atol=1e-5)
    assert table["decision"].tolist() == np.where(p_malignant >= threshold, "malignant", "benign").tolist()


def test_command_writes_the_csv_and_reports_failures(checkpoint, images, tmp_path, capsys):
    output = tmp_path / "out" / "predictions.csv"
    assert predict_command(_args(model=checkpoint, image_dir=images, output=output)) == 0
    table = pd.read_csv(output, keep_default_na=False)
    assert len(table) == 5 and (table["error"] != "").sum() == 2
    summary = capsys.readouterr().out
    assert "5 images:" in summary and "2 failed (see the error column)" in summary
    assert not list(output.parent.glob(".*"))  # no temporary file left behind


def test_command_summary_counts(checkpoint, images, tmp_path, capsys):
    output = tmp_path / "predictions.csv"
    predict_command(_args(model=checkpoint, images=[images / "a.jpg", images / "text.jpg"], output=output))
    summary = capsys.readouterr().out
    assert "2 images:" in summary and "1 failed" in summary and str(output) in summary


def test_missing_or_foreign_checkpoint_is_a_clear_error(images, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        predict_images(tmp_path / "missing.h5", [images / "a.jpg"])
    foreign = tmp_path / "photo.h5"
    foreign.write_bytes((images / "a.jpg").read_bytes())
    with pytest.raises(CheckpointError, match="not an HDF5 file"):
        predict_images(foreign, [images / "a.jpg"])


def test_images_or_folder_but_not_both(images, tmp_path):
    with pytest.raises(DataError, match="exactly one"):
        image_paths([images / "a.jpg"], images)
    with pytest.raises(DataError, match="exactly one"):
        image_paths([], None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No image files"):
        image_paths([], tmp_path / "empty")


def test_cli_predict_subcommand(checkpoint, images, tmp_path, capsys):
    output = tmp_path / "cli.csv"
    argv = ["predict", "--model", str(checkpoint), str(images / "a.jpg"), "--output", str(output)]
    assert cli.main(argv) == 0 and len(pd.read_csv(output)) == 1
    assert cli.main(["predict", "--model", str(tmp_path / "nope.h5"), str(images / "a.jpg")]) == 2
    assert "Checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as missing_model:
        cli.main(["predict", str(images / "a.jpg")])
    assert missing_model.value.code == 2 and "--model" in capsys.readouterr().err
