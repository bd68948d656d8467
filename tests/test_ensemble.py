"""Ensembles saved as one checkpoint: the mean of the members' probabilities, loadable, explainable."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from builders import flip_sensitive_model, save_untrained_checkpoint, stored_weight_dtypes

from helpers.apps import cli
from helpers.apps.export import check_parity, export_model
from helpers.core import config
from helpers.core.errors import CheckpointError
from helpers.evaluation.operating_point import (
    load_operating_point,
    operating_point_path,
    save_operating_point,
)
from helpers.explain.heatmaps import gradcam
from helpers.models.build import build_model
from helpers.models.checkpoints import load_checkpoint, save_checkpoint
from helpers.models.ensemble import ensemble_model, save_ensemble

SIZE = (32, 40)


def test_ensemble_checkpoint_averages_its_members(tmp_path) -> None:
    members = [
        save_untrained_checkpoint(tmp_path / f"m{index}.h5", input_size=SIZE, trained_on=partitions)
        for index, partitions in enumerate((["train"], ["train", "val", "test"]))
    ]
    path = save_ensemble(members, tmp_path / "ensemble.h5")
    model, metadata = load_checkpoint(path)
    images = np.random.default_rng(0).uniform(0, 255, (4, *SIZE, 3)).astype("float32")
    expected = np.mean([load_checkpoint(member)[0].predict(images, verbose=0) for member in members], axis=0)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-6)
    assert metadata["arch"] == "ensemble" and len(metadata["members"]) == 2
    assert metadata["trained_on"] == ["test", "train", "val"]  # the union: no held-out internal images left
    heatmap, class_index, probabilities = gradcam(model, images[0])
    assert heatmap.shape == SIZE and probabilities.shape == (7,)


def _confident_member(seed: int) -> keras.Model:
    """An untrained model whose head has a large random bias, so its probabilities are far from uniform."""
    keras.utils.set_random_seed(seed)
    model = build_model("light_cnn", input_size=SIZE, weights=None)
    head = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel, bias = head.get_weights()
    head.set_weights([kernel, np.random.default_rng(seed).normal(0.0, 3.0, bias.shape).astype("float32")])
    return model


def test_gradcam_of_an_ensemble_reports_its_mean_probabilities() -> None:
    """The mean of the members' probabilities is what the demo shows, not a softmax of it."""
    model = ensemble_model([_confident_member(0), _confident_member(1)])
    images = np.random.default_rng(4).uniform(0, 255, (2, *SIZE, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    assert expected.max() > 0.3  # far from uniform, where a second softmax would barely show
    _, class_index, probabilities = gradcam(model, images[0])
    np.testing.assert_allclose(probabilities, expected[0], atol=1e-5)
    assert class_index == int(np.argmax(expected[0]))


def test_members_of_other_input_sizes_see_the_image_resized(tmp_path) -> None:
    """An ensemble across input sizes takes the largest and resizes in front of the smaller member, so it is
    still one model for evaluation, Grad-CAM and every tool that reads its input size."""
    large_size = (48, 60)
    small = save_untrained_checkpoint(tmp_path / "small.h5", input_size=SIZE)
    large = save_untrained_checkpoint(tmp_path / "large.h5", input_size=large_size)
    model, metadata = load_checkpoint(save_ensemble([small, large], tmp_path / "ensemble.h5"))
    assert metadata["input_size"] == list(large_size) and model.input_shape[1:3] == large_size
    images = np.random.default_rng(1).uniform(0, 255, (3, *large_size, 3)).astype("float32")
    resized = keras.ops.image.resize(images, SIZE, interpolation="bilinear")
    expected = (
        load_checkpoint(small)[0].predict(resized, verbose=0)
        + load_checkpoint(large)[0].predict(images, verbose=0)
    ) / 2
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-5)
    heatmap, _, probabilities = gradcam(model, images[0])
    assert heatmap.shape == large_size and probabilities.shape == (7,)


def test_one_checkpoint_read_at_a_larger_size_is_that_model_on_the_resized_image(tmp_path, capsys) -> None:
    """Test-time smoothing: the model reads the larger image and resizes it down to the member's own size
    inside the graph; its head stays the output, so Grad-CAM explains it like the member itself."""
    read_size = (48, 60)
    member = save_untrained_checkpoint(tmp_path / "member.h5", input_size=SIZE)
    output = tmp_path / "smoothed.h5"
    argv = ["ensemble", str(member), "--input-size", *map(str, read_size), "--output", str(output)]
    assert cli.main(argv) == 0
    assert "read at 48x60" in capsys.readouterr().out
    model, metadata = load_checkpoint(output)
    assert metadata["input_size"] == list(read_size) and len(metadata["members"]) == 1
    images = np.random.default_rng(3).uniform(0, 255, (3, *read_size, 3)).astype("float32")
    resized = keras.ops.image.resize(images, SIZE, interpolation="bilinear")
    expected = load_checkpoint(member)[0].predict(resized, verbose=0)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-5)
    heatmap, _, probabilities = gradcam(model, images[0])
    assert heatmap.shape == read_size
    np.testing.assert_allclose(probabilities, expected[0], atol=1e-5)


def test_saved_ensembles_among_the_checkpoints_give_their_members(tmp_path) -> None:
    """Two saved ensembles (e.g. two seeds' releases) ensembled again: every member counts once, at the read
    size the saved ensembles used (nested, their repeated member names cannot share one HDF5 file)."""
    read_size = (48, 60)
    first, second, third = (save_untrained_checkpoint(tmp_path / f"m{i}.h5", input_size=SIZE) for i in "abc")
    pair = save_ensemble([first, second], tmp_path / "pair.h5", input_size=read_size)
    smoothed = save_ensemble([third], tmp_path / "smoothed.h5", input_size=read_size)
    model, metadata = load_checkpoint(save_ensemble([pair, smoothed], tmp_path / "both.h5"))
    assert metadata["input_size"] == list(read_size) and len(metadata["members"]) == 3
    images = np.random.default_rng(5).uniform(0, 255, (3, *read_size, 3)).astype("float32")
    resized = keras.ops.image.resize(images, SIZE, interpolation="bilinear")
    members = (first, second, third)
    expected = np.mean([load_checkpoint(path)[0].predict(resized, verbose=0) for path in members], axis=0)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-5)


def test_a_saved_ensemble_is_never_read_smaller_or_too_large_nor_with_a_damaged_sidecar(tmp_path) -> None:
    """A smaller --input-size would silently undo a saved ensemble's smoothing; one more than twice a member's
    side would skip pixels; a sidecar whose member list
    does not match the model's members cannot say which member is which: both are clear errors."""
    first, second = (save_untrained_checkpoint(tmp_path / f"m{i}.h5", input_size=SIZE) for i in "ab")
    smoothed = save_ensemble([first], tmp_path / "smoothed.h5", input_size=(48, 60))
    with pytest.raises(CheckpointError, match="smaller than"):
        save_ensemble([smoothed, second], tmp_path / "small.h5", input_size=SIZE)
    with pytest.raises(CheckpointError, match=r"input 65x80 is more than 2x the smallest member side") as far:
        save_ensemble([first], tmp_path / "far.h5", input_size=(65, 80))  # would skip pixels
    assert "read at most 64x80 (--input-size)" in str(far.value)
    assert save_ensemble([first], tmp_path / "twofold.h5", input_size=(64, 80)).is_file()  # 2x is allowed
    large = save_untrained_checkpoint(tmp_path / "large.h5", input_size=(32, 81))
    with pytest.raises(CheckpointError, match=r"input 32x81 is more than 2x") as mixed:
        save_ensemble([first, large], tmp_path / "mixed.h5")  # the largest member's size, too
    assert "input sizes are more than 2x apart" in str(mixed.value)  # no input size would do
    assert not list(tmp_path.glob("far*")) and not list(tmp_path.glob("mixed*"))
    sidecar = smoothed.with_suffix(".json")
    metadata = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**metadata, "members": metadata["members"] * 2}))
    with pytest.raises(CheckpointError, match=r"smoothed\.h5: its sidecar lists 2 ensemble members"):
        save_ensemble([smoothed, second], tmp_path / "damaged.h5")


def test_a_checkpoint_given_twice_or_a_lone_saved_ensemble_is_refused(tmp_path, monkeypatch) -> None:
    """A repeated checkpoint, given twice or also inside a saved ensemble, would silently count double; a
    saved ensemble alone would only be copied (losing its operating point): all are clear errors, and nothing
    is written."""
    first, second = (save_untrained_checkpoint(tmp_path / f"m{i}.h5", input_size=SIZE) for i in "ab")
    monkeypatch.chdir(tmp_path)  # the same file under a relative and an absolute name
    with pytest.raises(CheckpointError, match="given twice"):
        save_ensemble([first, second, first.name], tmp_path / "twice.h5")
    pair = save_ensemble([first, second], tmp_path / "pair.h5")
    with pytest.raises(CheckpointError, match="already an ensemble"):
        save_ensemble([pair], tmp_path / "copy.h5")
    with pytest.raises(CheckpointError, match=r"The model ma\.h5 \(saved .*\) is both in \S*pair\.h5 and in"):
        save_ensemble([pair, first, second], tmp_path / "inside.h5")  # a member given alone too
    third = save_untrained_checkpoint(tmp_path / "mc.h5", input_size=SIZE)
    other_pair = save_ensemble([first, third], tmp_path / "other_pair.h5", half_precision=True)
    with pytest.raises(CheckpointError, match=r"ma\.h5 .* is both in \S*pair\.h5 and in \S*other_pair\.h5"):
        save_ensemble([pair, other_pair], tmp_path / "shared.h5")  # float16 copies count as the same
    for name in ("twice.h5", "copy.h5", "inside.h5", "shared.h5"):
        assert not (tmp_path / name).exists()


def test_the_read_image_is_resized_whole_and_bilinearly() -> None:
    """Another aspect ratio is squeezed, not cropped, and bilinear: a model of the raw pixels tells apart."""
    member = flip_sensitive_model(SIZE)
    model = ensemble_model([member], input_size=(48, 48))
    images = np.random.default_rng(5).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    resized = keras.ops.image.resize(images, SIZE, interpolation="bilinear")
    np.testing.assert_allclose(
        model.predict(images, verbose=0), member.predict(resized, verbose=0), atol=1e-5
    )


def test_an_input_size_must_cover_every_member(tmp_path) -> None:
    members = [
        load_checkpoint(save_untrained_checkpoint(tmp_path / f"m{index}.h5", input_size=size))[0]
        for index, size in enumerate((SIZE, (48, 60)))
    ]
    with pytest.raises(CheckpointError, match="smaller than a member's 48x60"):
        ensemble_model(members, input_size=(48, 50))
    with pytest.raises(CheckpointError, match="at least two members, or one read at a larger"):
        ensemble_model(members[:1], input_size=SIZE)


def test_an_ensemble_across_input_sizes_exports_to_onnx_with_parity(tmp_path) -> None:
    """Its members are called in inference mode: ONNX Runtime has no kernel for the random ops of dropout."""
    members = [
        save_untrained_checkpoint(tmp_path / f"m{index}.h5", input_size=size)
        for index, size in enumerate((SIZE, (48, 60)))
    ]
    ensemble = save_ensemble(members, tmp_path / "ensemble.h5")
    exported = export_model(ensemble, "onnx", out_dir=tmp_path / "exported")
    images = np.random.default_rng(2).uniform(0, 255, (4, 48, 60, 3)).astype("float32")
    parity = check_parity(load_checkpoint(ensemble)[0], exported, "onnx", images)
    assert parity["max_abs_diff"] < 1e-5 and parity["top1_agreement"] == 1.0


def test_members_must_match(tmp_path) -> None:
    multiclass = save_untrained_checkpoint(tmp_path / "a.h5", input_size=SIZE)
    binary = save_untrained_checkpoint(tmp_path / "b.h5", input_size=SIZE, task="binary")
    with pytest.raises(CheckpointError, match="same task and classes"):
        save_ensemble([multiclass, binary], tmp_path / "e.h5")
    with pytest.raises(CheckpointError, match="at least two"):
        ensemble_model([load_checkpoint(multiclass)[0]])


def test_members_on_the_same_split_keep_it(tmp_path) -> None:
    """Copies of one split file (two clones) count as one split; different splits leave none."""
    splits, rows = [], "image_id,partition\na,train\n"
    for index, content in enumerate((rows, rows, "x\n")):
        splits.append(tmp_path / f"split{index}.csv")
        splits[-1].write_text(content)
    members = [
        save_untrained_checkpoint(tmp_path / f"m{index}.h5", input_size=SIZE, split_file=str(split))
        for index, split in enumerate(splits)
    ]
    _, same = load_checkpoint(save_ensemble(members[:2], tmp_path / "same.h5"))
    assert same["split_file"] == str(splits[0])
    _, different = load_checkpoint(save_ensemble(members[1:], tmp_path / "different.h5"))
    assert different["split_file"] is None


def test_ensemble_command_saves_one_model_with_a_borrowed_operating_point(tmp_path, capsys) -> None:
    members = [save_untrained_checkpoint(tmp_path / f"m{index}.h5", input_size=SIZE) for index in range(2)]
    validated = save_untrained_checkpoint(tmp_path / "validated.h5", input_size=SIZE)
    save_operating_point(
        operating_point_path(validated),
        threshold=0.3,
        target_sensitivity=0.9,
        temperature=1.5,
        val_metrics={},
        checkpoint=validated,
        class_bias=[0.1] * 7,
    )
    output = tmp_path / "release" / "ensemble.h5"
    argv = ["ensemble", *map(str, members), "--output", str(output)]
    assert cli.main([*argv, "--operating-point-of", str(validated)]) == 0
    point = load_operating_point(operating_point_path(output))
    assert point["checkpoint"] == "ensemble.h5" and point["fitted_for"] == "validated.h5"
    assert point["temperature"] == 1.5 and point["class_bias"] == [0.1] * 7
    assert load_checkpoint(output)[1]["arch"] == "ensemble"
    assert cli.main([*argv, "--operating-point-of", str(validated)]) == cli.ERROR_EXIT_CODE
    assert "Refusing to overwrite" in capsys.readouterr().err
    unvalidated = ["ensemble", *map(str, members), "--output", str(tmp_path / "other.h5")]
    assert cli.main([*unvalidated, "--operating-point-of", str(members[0])]) == cli.ERROR_EXIT_CODE
    assert "operating point not found" in capsys.readouterr().err and not (tmp_path / "other.h5").exists()
    alone = ["ensemble", str(members[0]), "--output", str(tmp_path / "one.h5")]
    assert cli.main(alone) == cli.ERROR_EXIT_CODE
    assert "at least two" in capsys.readouterr().err


def test_half_precision_halves_the_file_and_any_keras_loads_it_as_float32(tmp_path) -> None:
    model = build_model("mobilenetv3small", input_size=(64, 64), weights=None)
    facts = {"task": "multiclass", "class_names": list(config.CLASS_NAMES), "input_size": [64, 64]}
    full = save_checkpoint(model, tmp_path / "full.h5", facts)
    half = save_checkpoint(model, tmp_path / "half.h5", facts, half_precision=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size  # weights halved, model config as it was
    assert stored_weight_dtypes(half) == {"float16"}
    plain = keras.models.load_model(half, compile=False)  # no project code needed to open it
    assert {weight.dtype for weight in plain.weights} == {"float32"}
    loaded, metadata = load_checkpoint(half)
    assert metadata["weights_dtype"] == "float16" and load_checkpoint(full)[1]["weights_dtype"] == "float32"
    images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=2e-3)


def test_ensemble_command_saves_in_half_precision_when_asked(tmp_path, capsys) -> None:
    members = [save_untrained_checkpoint(tmp_path / f"m{index}.h5", input_size=SIZE) for index in range(2)]
    output = tmp_path / "half.h5"
    assert cli.main(["ensemble", *map(str, members), "--output", str(output), "--half-precision"]) == 0
    assert "in half precision" in capsys.readouterr().out
    assert load_checkpoint(output)[1]["weights_dtype"] == "float16"
    assert stored_weight_dtypes(output) == {"float16"}
