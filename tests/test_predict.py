"""``skinlesion predict``: one row per image, bad images reported in place, saved operating point, errors,
the output path checked first, skipped files named, tiny images warned about, exit codes."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import (
    damage_jpeg_middle,
    save_operating_point_beside,
    save_untrained_checkpoint,
    write_image_rgb,
    write_noise_image,
)

from helpers.apps import cli
from helpers.apps import predict as predict_app
from helpers.apps.predict import NOTHING_PREDICTED_EXIT_CODE, image_paths, predict_command
from helpers.core import config
from helpers.core.errors import CheckpointError, DataError
from helpers.data.pipeline import load_image_array
from helpers.evaluation.calibration import calibrate
from helpers.evaluation.inference import predict_images, probability_column
from helpers.evaluation.metrics import malignant_probability
from helpers.evaluation.operating_point import apply_class_bias, operating_point_path
from helpers.models.checkpoints import load_checkpoint
from helpers.models.predict import predict_batch

SIZE = (32, 40)
GOOD = ("a.jpg", "b.png", "sub/c.jpg")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    return save_untrained_checkpoint(folder / "light_cnn_v1_01_0.500.h5", input_size=SIZE)


@pytest.fixture
def images(tmp_path) -> Path:
    """Three good images (one in a subfolder), a truncated JPEG, a text file named .jpg and files that a
    folder scan leaves out (a text file, a GIF, a hidden file)."""
    folder = tmp_path / "images"
    for index, name in enumerate(GOOD):
        write_noise_image(folder / name, index, (60, 80))
    data = (folder / "a.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.jpg").write_text("not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    (folder / "anim.gif").write_bytes(b"GIF89a")
    (folder / ".hidden.jpg").write_bytes(data)
    return folder


def _args(**overrides) -> argparse.Namespace:
    values = {"images": [], "image_dir": None, "output": None, "batch_size": 2, "model": None}
    return argparse.Namespace(**{**values, **overrides})


def test_bad_images_get_an_error_row_and_the_rest_is_predicted(checkpoint, images):
    paths, _ = image_paths([], images)
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
    assert (table["warning"] == "").all()  # 60x80 images for a 32x40 model: no warning


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


@pytest.mark.parametrize("after_bias", [False, True])
def test_p_malignant_is_summed_before_the_class_bias_unless_the_point_was_fitted_after_it(
    checkpoint, images, after_bias: bool
) -> None:
    """The class columns carry the bias (the diagnosis); P(malignant) and the decision do not, except under a
    v1 operating point, whose threshold was fitted on the sum after it."""
    paths = [images / name for name in GOOD]
    model, _ = load_checkpoint(checkpoint)
    calibrated = calibrate(predict_batch(model, load_image_array(paths, SIZE, progress=False)), 0.05)
    bias = np.linspace(-1.5, 1.5, len(config.CLASS_NAMES))
    corrected = apply_class_bias(calibrated, bias)
    save_operating_point_beside(
        checkpoint, threshold=0.5, temperature=0.05, class_bias=bias.tolist(), malignant_after_bias=after_bias
    )
    try:
        table = predict_images(checkpoint, paths, progress=False)
    finally:
        operating_point_path(checkpoint).unlink()
    columns = [probability_column(name) for name in config.CLASS_NAMES]
    np.testing.assert_allclose(table[columns].to_numpy(), corrected, atol=1e-5)
    expected = malignant_probability(corrected if after_bias else calibrated)
    assert np.abs(malignant_probability(corrected) - malignant_probability(calibrated)).max() > 1e-3
    np.testing.assert_allclose(table["p_malignant"], expected, atol=1e-5)


def test_command_writes_the_csv_and_reports_failures(checkpoint, images, tmp_path, capsys):
    output = tmp_path / "out" / "predictions.csv"
    assert predict_command(_args(model=checkpoint, image_dir=images, output=output)) == 0
    table = pd.read_csv(output, keep_default_na=False)
    assert len(table) == 5 and (table["error"] != "").sum() == 2
    summary = capsys.readouterr().out
    assert (
        "5 images:" in summary and "2 failed (see the error column)" in summary and "warning" not in summary
    )
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


def test_cli_predict_subcommand(checkpoint, images, tmp_path, capsys, monkeypatch):
    output = tmp_path / "cli.csv"
    argv = ["predict", "--model", str(checkpoint), str(images / "a.jpg"), "--output", str(output)]
    assert cli.main(argv) == 0 and len(pd.read_csv(output)) == 1
    assert cli.main(["predict", "--model", str(tmp_path / "nope.h5"), str(images / "a.jpg")]) == 2
    assert "Checkpoint not found" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(checkpoint.parent), str(images / "a.jpg")]) == 2
    assert f"{checkpoint.parent} is a folder" in capsys.readouterr().err
    monkeypatch.setattr(config, "MODELS_DIR", tmp_path / "no_models")
    monkeypatch.setattr(config, "RELEASE_DIR", tmp_path / "no_release")
    assert cli.main(["predict", str(images / "a.jpg"), "--output", str(tmp_path / "x.csv")]) == 2
    assert "No checkpoint" in capsys.readouterr().err  # no --model: trained here, else released; here neither


def test_damaged_jpeg_data_gets_an_error_not_a_prediction(checkpoint, images, tmp_path):
    damaged = damage_jpeg_middle(images / "a.jpg", tmp_path / "damaged.jpg")
    table = predict_images(checkpoint, [images / "b.png", damaged], progress=False)
    assert table["error"].tolist()[0] == ""
    assert table["error"].tolist()[1].startswith("Unusable image: damaged JPEG data (Corrupt JPEG data")
    assert np.isnan(table["p_malignant"].iloc[1]) and table["predicted"].iloc[1] == ""


def test_far_smaller_images_are_predicted_with_a_warning(checkpoint, tmp_path, capsys):
    tiny = write_noise_image(tmp_path / "tiny.png", 1, (1, 1))
    small = write_noise_image(tmp_path / "small.jpg", 2, (15, 40))  # half the model's height, and less
    fine = write_noise_image(tmp_path / "fine.jpg", 3, (16, 20))  # exactly half: no warning
    table = predict_images(checkpoint, [tiny, small, fine], progress=False)
    assert (table["error"] == "").all() and table["predicted"].ne("").all()
    assert (
        table["warning"]
        .iloc[0]
        .startswith("image of 1x1 pixels is far smaller than the model input of 40x32")
    )
    assert "40x15 pixels" in table["warning"].iloc[1] and table["warning"].iloc[2] == ""
    output = tmp_path / "out.csv"
    assert predict_command(_args(model=checkpoint, images=[tiny, fine], output=output)) == 0
    assert "1 with a warning (see the warning column)" in capsys.readouterr().out
    assert pd.read_csv(output, keep_default_na=False)["warning"].str.contains("far smaller").tolist() == [
        True,
        False,
    ]


def test_blank_images_are_predicted_with_a_warning(checkpoint, tmp_path):
    black = write_image_rgb(tmp_path / "black.png", np.zeros((60, 80, 3), dtype=np.uint8))
    red = write_image_rgb(tmp_path / "red.jpg", np.full((60, 80, 3), (200, 30, 40), dtype=np.uint8))
    lesion = write_noise_image(tmp_path / "lesion.jpg", 4, (60, 80))
    table = predict_images(checkpoint, [black, red, lesion], progress=False)
    assert (table["error"] == "").all() and table["predicted"].ne("").all()
    assert (
        table["warning"]
        .iloc[0]
        .startswith("image is (almost) one flat colour (pixel standard deviation 0.0)")
    )
    assert "one flat colour" in table["warning"].iloc[1] and table["warning"].iloc[2] == ""


def test_broken_links_in_a_folder_are_skipped_with_the_reason(tmp_path):
    folder = tmp_path / "links"
    write_noise_image(folder / "good.png", 5)
    (folder / "broken.jpg").symlink_to(tmp_path / "nonexistent" / "x.jpg")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    paths, skipped = image_paths([], folder)
    assert paths == [folder / "good.png"]
    assert skipped == [
        "broken.jpg: broken link (No such file or directory)",
        "loop.jpg: broken link (Too many levels of symbolic links)",
    ]
    (folder / "good.png").rename(folder / ".good.png")
    with pytest.raises(DataError, match="No image files") as error:
        image_paths([], folder)
    assert "  .good.png: hidden file\n  broken.jpg: broken link" in str(error.value)


def test_skipped_files_of_a_folder_are_named_with_the_reason(checkpoint, images, tmp_path, capsys):
    paths, skipped = image_paths([], images)
    assert len(paths) == 5
    suffixes = ".bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp"
    assert skipped == [
        ".hidden.jpg: hidden file",
        f"anim.gif: not an image suffix (.gif; read: {suffixes})",
        f"notes.txt: not an image suffix (.txt; read: {suffixes})",
    ]
    predict_command(_args(model=checkpoint, image_dir=images, output=tmp_path / "p.csv"))
    err = capsys.readouterr().err
    assert f"Skipped 3 file(s) under {images}:" in err and "  notes.txt: not an image suffix (.txt" in err


def test_exit_code_is_non_zero_only_when_nothing_was_predicted(checkpoint, images, tmp_path, capsys):
    output = tmp_path / "failed.csv"
    bad = [images / "truncated.jpg", images / "text.jpg"]
    assert (
        predict_command(_args(model=checkpoint, images=bad, output=output))
        == NOTHING_PREDICTED_EXIT_CODE
        == 1
    )
    assert "none of the 2 images could be predicted" in capsys.readouterr().err
    assert (pd.read_csv(output, keep_default_na=False)["error"] != "").all()  # the CSV still says why
    assert cli.main(["predict", "--model", str(checkpoint), *map(str, bad), "--output", str(output)]) == 1
    partial = [images / "a.jpg", *bad]
    assert predict_command(_args(model=checkpoint, images=partial, output=output)) == 0


def _never_predict(*args, **kwargs):
    raise AssertionError("the output path must be checked before predicting")


@pytest.mark.parametrize("kind", ["folder", "under a file"])
def test_bad_output_path_is_refused_before_any_work(checkpoint, images, tmp_path, monkeypatch, kind):
    monkeypatch.setattr(predict_app, "predict_images", _never_predict)
    (tmp_path / "file.txt").write_text("x")
    output = tmp_path if kind == "folder" else tmp_path / "file.txt" / "predictions.csv"
    with pytest.raises(DataError, match="--output") as error:
        predict_command(_args(model=checkpoint, images=[images / "a.jpg"], output=output))
    assert "Fix: give --output a file path" in str(error.value)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("images/sub/c.jpg", "one of the input images"),
        ("new.png", "image suffix"),
    ],
)
def test_output_over_an_image_is_refused_before_any_work(
    checkpoint, images, tmp_path, monkeypatch, output, message
):
    """An input image of the folder or any image name: never overwritten with the CSV."""
    monkeypatch.setattr(predict_app, "predict_images", _never_predict)
    before = {path: path.read_bytes() for path in images.rglob("*.*")}
    with pytest.raises(DataError, match=message) as error:
        predict_command(_args(model=checkpoint, image_dir=images, output=tmp_path / output))
    assert "Fix: give --output a file path" in str(error.value)
    assert {path: path.read_bytes() for path in images.rglob("*.*")} == before


def test_a_write_that_fails_after_the_work_keeps_the_predictions(checkpoint, images, tmp_path, monkeypatch):
    output = tmp_path / "out" / "predictions.csv"
    predict = predict_app.predict_images

    def predict_then_lose_the_folder(*args, **kwargs):
        table = predict(*args, **kwargs)
        output.parent.rmdir()
        output.parent.write_text("the folder became a file meanwhile")
        return table

    monkeypatch.setattr(predict_app, "predict_images", predict_then_lose_the_folder)
    with pytest.raises(DataError, match="all 2 rows were saved to ") as error:
        predict_command(_args(model=checkpoint, images=[images / "a.jpg", images / "b.png"], output=output))
    rescue = Path(str(error.value).split("saved to ")[1].split(" instead")[0])
    assert len(pd.read_csv(rescue)) == 2
    rescue.unlink()
