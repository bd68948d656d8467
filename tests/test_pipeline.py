"""tf.data pipeline: shapes, labels, colour modes, resizing, augmentation, balancing, caching, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from builders import colour_coded_frame, damage_jpeg_middle, write_image_rgb, write_noise_image
from PIL import Image

from helpers.core.config import CLASS_NAMES, DEFAULT_IMAGE_SIZE
from helpers.core.errors import DataError
from helpers.data import augment, pipeline
from helpers.data.ham10000 import load_ham10000

SIZE = (30, 40)


@pytest.fixture
def frame(tmp_path: Path) -> pd.DataFrame:
    return colour_coded_frame(tmp_path, [i % len(CLASS_NAMES) for i in range(20)])


def _collect(dataset) -> tuple[np.ndarray, np.ndarray]:
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def test_multiclass_batches_have_documented_shapes_and_aligned_labels(frame: pd.DataFrame) -> None:
    dataset = pipeline.make_dataset(frame, image_size=SIZE, batch_size=8, training=True)
    assert dataset.element_spec[0].shape.as_list() == [None, *SIZE, 3]
    images, labels = _collect(dataset)
    assert images.shape == (20, *SIZE, 3) and images.dtype == np.float32 and labels.dtype == np.int32
    assert images.min() >= 0 and images.max() <= 255
    rows = ((images[:, 0, 0, 0] - 3) / 5).astype(int)
    assert sorted(rows) == list(range(20)) and rows.tolist() != list(range(20)), "all rows, shuffled"
    assert (labels == frame["label"].to_numpy()[rows]).all()
    assert (images[:, 0, 0, 2] == 200 - labels).all()


def test_binary_labels_are_float_zero_one_of_shape_batch(frame: pd.DataFrame) -> None:
    images, labels = _collect(pipeline.make_dataset(frame, task="binary", image_size=SIZE, batch_size=6))
    assert labels.dtype == np.float32 and labels.shape == (20,)
    assert labels.tolist() == frame["malignant"].astype(float).tolist()


@pytest.mark.parametrize("mode", ["grey", "rgba", "palette", "tiff", "jpeg", "tiff named .jpg"])
def test_every_colour_mode_and_format_becomes_rgb(tmp_path: Path, mode: str) -> None:
    rgb = np.zeros((*SIZE, 3), dtype=np.uint8)
    rgb[:, :20] = (200, 40, 10)
    path = tmp_path / (
        "img.tif" if mode == "tiff" else "img.jpg" if "jpg" in mode or mode == "jpeg" else "img.png"
    )
    if mode == "grey":
        cv2.imwrite(str(path), rgb[..., 0])
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    elif mode == "rgba":
        cv2.imwrite(
            str(path), cv2.cvtColor(np.dstack([rgb, np.full(SIZE, 90, np.uint8)]), cv2.COLOR_RGBA2BGRA)
        )
    elif mode == "palette":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(path)
        assert Image.open(path).mode == "P"
    elif mode == "tiff named .jpg":  # the format is told by the bytes, not the name
        path.write_bytes(cv2.imencode(".tiff", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())
    else:
        write_image_rgb(path, rgb)
    decoded = pipeline.load_image_array([path], SIZE, progress=False)[0]
    assert decoded.shape == (*SIZE, 3)
    assert np.abs(decoded.astype(int) - rgb).max() <= (40 if mode == "jpeg" else 1)


@pytest.mark.parametrize(
    ("source", "target"), [((150, 200), (150, 200)), ((450, 600), (150, 200)), ((150, 200), (64, 96))]
)
def test_resize_respects_height_and_width(
    tmp_path: Path, source: tuple[int, int], target: tuple[int, int]
) -> None:
    rgb = np.zeros((*source, 3), dtype=np.uint8)
    rgb[: source[0] // 2] = 255
    path = str(write_image_rgb(tmp_path / "img.png", rgb))
    image = pipeline.load_image_array([path], target, progress=False)[0]
    assert image.shape == (*target, 3)
    assert image[: target[0] // 2 - 2].min() == 255 and image[target[0] // 2 + 2 :].max() == 0
    if source == target:
        assert np.array_equal(image, rgb)


def test_without_augmentation_passes_are_identical(frame: pd.DataFrame) -> None:
    evaluation = pipeline.make_dataset(frame, image_size=SIZE, batch_size=8)
    first, second = _collect(evaluation), _collect(evaluation)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[1].tolist() == frame["label"].tolist()
    train = [
        _collect(pipeline.make_dataset(frame, image_size=SIZE, batch_size=8, training=True)) for _ in "ab"
    ]
    assert np.array_equal(train[0][1], train[1][1]), "the same seed gives the same first epoch"


def test_augmentation_varies_each_pass_within_range(frame: pd.DataFrame) -> None:
    gradient = np.tile(np.linspace(0, 255, SIZE[1], dtype=np.uint8)[None, :, None], (SIZE[0], 1, 3))
    images = np.stack([gradient] * len(frame))
    dataset = pipeline.make_dataset(frame, image_size=SIZE, batch_size=8, augment=True, images=images)
    first, second = _collect(dataset), _collect(dataset)
    assert first[0].shape == (20, *SIZE, 3) and first[0].dtype == np.float32
    assert not np.array_equal(first[0], second[0])
    assert 0 <= min(first[0].min(), second[0].min()) and max(first[0].max(), second[0].max()) <= 255
    assert np.array_equal(first[1], frame["label"].to_numpy())
    flipped = first[0][:, :, 0, 0].mean(axis=1) > first[0][:, :, -1, 0].mean(axis=1)
    assert 0 < flipped.sum() < len(flipped), "some images flipped left-right, some not"


@pytest.mark.parametrize("size", [(24, 32), (32, 32)])
def test_augmentation_keeps_plain_images_plain(size: tuple[int, int]) -> None:
    batch = np.full((16, *size, 3), 120, dtype=np.uint8)
    augmented = pipeline.augment_images(batch, np.array([1, 2])).numpy()
    assert augmented.shape == batch.shape
    assert augmented.std(axis=(1, 2)).max() < 1.0, "reflected borders: no black corners after rotation/zoom"
    assert augmented.reshape(16, -1).mean(axis=1).std() > 1.0, "colour jitter differs per image"
    assert np.abs(augmented - augmented[..., :1]).max() < 0.5, "hue/saturation jitter keeps grey grey"


@pytest.mark.parametrize("size", [(24, 32), (32, 32)])
def test_light_augmentation_only_flips_and_recolours(size: tuple[int, int]) -> None:
    batch = np.full((32, *size, 3), 100, dtype=np.uint8)
    batch[:, 0, 0] = 250
    augmented = pipeline.augment_images(batch, np.array([3, 4]), mode="light").numpy().mean(axis=-1)
    corners = {(0, 0), (0, size[1] - 1), (size[0] - 1, 0), (size[0] - 1, size[1] - 1)}
    bright = {np.unravel_index(image.argmax(), image.shape) for image in augmented}
    assert bright == corners, "the marked pixel lands on every corner, and only there"
    assert all((np.abs(image - np.median(image)) > 1e-3).sum() == 1 for image in augmented), "no blur"
    with pytest.raises(ValueError, match="augment_mode must be one of"):
        pipeline.make_dataset(pd.DataFrame(), augment=True, augment_mode="heavy")
    with pytest.raises(ValueError, match="augment mode must be one of"):
        pipeline.augment_images(batch, np.array([3, 4]), mode="heavy")  # not silently the strong mode


def test_strong_augmentation_changes_white_balance_and_sharpness() -> None:
    """``strong`` tints grey images (per-channel gains) and softens about half of the images."""
    grey = np.full((32, 24, 32, 3), 120, dtype=np.uint8)
    strong = pipeline.augment_images(grey, np.array([5, 6]), mode="strong").numpy()
    assert strong.min() >= 0 and strong.max() <= 255
    tint = np.abs(strong - strong[..., :1]).max(axis=(1, 2, 3))
    assert (tint > 5).mean() > 0.8, "per-channel gains move grey off grey"
    checker = np.repeat((np.indices((32, 24, 32)).sum(axis=0) % 2 * 200.0)[..., np.newaxis], 3, axis=-1)
    blurred = augment._random_blur(tf.constant(checker, tf.float32), tf.constant([7, 8])).numpy()
    softened = blurred.std(axis=(1, 2, 3)) < 0.95 * checker.std(axis=(1, 2, 3))
    assert 0.25 < softened.mean() < 0.75, "blur on about half of the images"


@pytest.mark.parametrize(("mode", "softer"), [("blur", True), ("sharpen", False)])
def test_blur_and_sharpen_augmentation_are_full_plus_a_change_of_detail(mode: str, softer: bool) -> None:
    """``blur`` and ``sharpen`` draw the same warp as ``full`` and soften, or sharpen, about half of the
    images and never the other way, keeping grey grey."""
    grey = np.random.default_rng(0).uniform(90, 160, (64, 24, 32)).astype(np.uint8)
    batch = np.repeat(grey[..., np.newaxis], 3, axis=-1)
    full, changed = (
        pipeline.augment_images(batch, np.array([1, 2]), mode=name).numpy() for name in ("full", mode)
    )
    assert np.abs(changed - changed[..., :1]).max() < 1e-3, "no channel gains"

    def sharpness(images: np.ndarray) -> np.ndarray:  # fine detail over coarse: colour jitter cancels
        soft = augment._soft_copy(tf.constant(images)).numpy()
        return (images - soft).std(axis=(1, 2, 3)) / soft.std(axis=(1, 2, 3))

    ratio = (sharpness(changed) / sharpness(full)) ** (1 if softer else -1)
    assert ratio.max() < 1.03, f"never the other way: {np.round(ratio, 2)}"
    assert 0.3 < (ratio < 0.99).mean() < 0.7, f"about half changed: {np.round(ratio, 2)}"


def test_balanced_sampling_evens_out_classes(tmp_path: Path) -> None:
    labels = [5] * 180 + [4] * 40 + [3] * 20
    frame = colour_coded_frame(tmp_path, labels, size=(4, 4))
    dataset = pipeline.make_dataset(frame, image_size=(4, 4), batch_size=16, training=True, balanced=True)
    assert len(list(dataset)) == len(frame) // 16
    drawn = np.concatenate([_collect(dataset)[1] for _ in range(4)])
    assert len(drawn) == 4 * 15 * 16
    shares = np.array([(drawn == label).mean() for label in (3, 4, 5)])
    assert np.abs(shares - 1 / 3).max() < 0.06, shares
    with pytest.raises(ValueError, match="training=True"):
        pipeline.make_dataset(frame, balanced=True)


def test_cache_and_in_memory_images_match_files(frame: pd.DataFrame) -> None:
    from_files = _collect(pipeline.make_dataset(frame, image_size=SIZE))
    cached = pipeline.make_dataset(frame, image_size=SIZE, cache=True)
    for path in frame["image_path"]:
        Path(path).unlink()
    assert np.array_equal(_collect(cached)[0], from_files[0]), "cached epochs never read the files"
    array = from_files[0].astype(np.uint8)
    assert np.array_equal(
        _collect(pipeline.make_dataset(frame, image_size=SIZE, images=array))[0], from_files[0]
    )
    with pytest.raises(ValueError, match="uint8"):
        pipeline.make_dataset(frame, image_size=SIZE, images=array[:5])


def test_in_memory_images_are_resized_to_the_asked_size(frame: pd.DataFrame) -> None:
    images = np.zeros((len(frame), 60, 80, 3), dtype=np.uint8)
    batch, _ = next(pipeline.make_dataset(frame, image_size=SIZE, images=images).as_numpy_iterator())
    assert batch.shape[1:] == (*SIZE, 3)


def test_missing_corrupt_and_unlabelled_images_raise_data_errors(frame: pd.DataFrame) -> None:
    missing = frame["image_path"].iloc[3]
    Path(missing).unlink()
    for build in (
        lambda: pipeline.make_dataset(frame),
        lambda: pipeline.load_image_array(frame["image_path"], SIZE),
    ):
        with pytest.raises(DataError, match="1 of 20 image files are missing or unusable") as error:
            build()
        assert f"{missing}: missing file" in str(error.value)
    corrupt = frame["image_path"].iloc[10]
    Path(corrupt).write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError, match="truncated PNG") as error:
        pipeline.load_image_array(frame["image_path"].drop(index=3), SIZE, progress=False)
    assert f"File: {corrupt}" in str(error.value)
    with pytest.raises(DataError, match="no valid 'label'"):
        pipeline.make_dataset(frame.assign(label=-1))
    with pytest.raises(ValueError, match="task"):
        pipeline.make_dataset(frame, task="segmentation")


def test_damaged_jpeg_data_that_tensorflow_decodes_is_refused_before_any_batch(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_noise_image(tmp_path / "source.jpg", 0, (48, 64))
    damaged = str(damage_jpeg_middle(source, tmp_path / "damaged.jpg"))
    assert tf.io.decode_jpeg(tf.io.read_file(damaged)).shape == (48, 64, 3)  # TensorFlow lets it through
    frame.loc[4, "image_path"] = damaged
    for build in (
        lambda: pipeline.make_dataset(frame),
        lambda: pipeline.make_dataset(frame, cache=True),
        lambda: pipeline.load_image_array(frame["image_path"], SIZE, progress=False),
    ):
        with pytest.raises(DataError, match="1 of 20 image files are missing or unusable") as error:
            build()
        assert f"{damaged}: damaged JPEG data (Corrupt JPEG data" in str(error.value)
        assert "on_error='skip'" in str(error.value)


def test_corrupt_tiff_read_by_opencv_raises_a_data_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "scan.tif"
    corrupt.write_bytes(b"II*\x00" + b"garbage" * 10)
    with pytest.raises(DataError) as error:
        pipeline.load_image_array([corrupt], SIZE, progress=False)
    assert f"File: {corrupt}" in str(error.value)


def test_load_image_array_of_nothing_is_empty() -> None:
    assert pipeline.load_image_array([], SIZE).shape == (0, *SIZE, 3)


@pytest.mark.real_data
def test_real_images_flow_through_the_pipeline(ham_root: Path) -> None:
    frame = load_ham10000(ham_root, verify_images=False).groupby("dx").head(10).reset_index(drop=True)
    frame = frame.iloc[:64]
    images = pipeline.load_image_array(frame["image_path"], DEFAULT_IMAGE_SIZE, progress=False)
    assert images.shape == (64, 150, 200, 3) and images.std() > 10
    x, y = next(pipeline.make_dataset(frame, batch_size=64).as_numpy_iterator())
    assert np.array_equal(x, images.astype(np.float32)) and y.tolist() == frame["label"].tolist()
    x, y = next(
        pipeline.make_dataset(
            frame, batch_size=32, training=True, augment=True, images=images
        ).as_numpy_iterator()
    )
    assert x.shape == (32, 150, 200, 3) and 0 <= x.min() and x.max() <= 255 and set(y) <= set(frame["label"])
