"""Image reading, writing, sizing and damage detection on small synthetic files."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from builders import damage_jpeg_middle, noise_image, write_image_rgb
from PIL import Image

from helpers.core.errors import DataError
from helpers.data.images import (
    MISSING_FILE,
    check_image,
    image_problem,
    image_size,
    locate_images,
    read_image_rgb,
)

RED = (200, 30, 10)


def _gradient(height: int = 30, width: int = 40) -> np.ndarray:
    """A non-uniform RGB test image so that encoders produce real entropy-coded data."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 8 % 256, cols * 6 % 256, (rows + cols) * 3 % 256], axis=-1).astype(np.uint8)


@pytest.fixture
def jpeg(tmp_path: Path) -> Path:
    return write_image_rgb(tmp_path / "image.jpg", _gradient())


def test_png_round_trip_keeps_rgb_order(tmp_path: Path) -> None:
    image = np.zeros((5, 7, 3), np.uint8)
    image[..., :] = RED
    path = write_image_rgb(tmp_path / "red.png", image)
    assert np.array_equal(read_image_rgb(path), image)
    assert tuple(cv2.imread(str(path))[0, 0]) == RED[::-1]  # on disk OpenCV's BGR, read back as RGB


def test_jpeg_reads_as_rgb_uint8(jpeg: Path) -> None:
    image = read_image_rgb(jpeg)
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - _gradient()).mean() < 8


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16"])
def test_other_pixel_formats_become_rgb8(tmp_path: Path, mode: str) -> None:
    rgb = Image.fromarray(_gradient())
    if mode == "I;16":
        Image.fromarray(_gradient()[..., 0].astype(np.uint16) * 257).save(tmp_path / "x.png")
    else:
        rgb.convert(mode).save(tmp_path / "x.png")
    image = read_image_rgb(tmp_path / "x.png")
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    expected = np.asarray(rgb.convert("RGB" if mode in ("RGBA", "P") else "L").convert("RGB"))
    if mode == "I;16":
        expected = np.repeat(_gradient()[..., :1], 3, axis=-1)
    tolerance = 40 if mode == "P" else 0  # palette quantisation changes colours
    assert np.abs(image.astype(int) - expected).mean() <= tolerance


def test_grey_png_has_three_equal_channels(tmp_path: Path) -> None:
    path = write_image_rgb(tmp_path / "grey.png", _gradient()[..., 0])
    image = read_image_rgb(path)
    assert image.shape == (30, 40, 3)
    assert np.array_equal(image[..., 0], image[..., 2])


def test_image_size_from_headers(tmp_path: Path, jpeg: Path) -> None:
    png = write_image_rgb(tmp_path / "wide.png", _gradient(12, 50))
    bmp = write_image_rgb(tmp_path / "tall.bmp", _gradient(60, 20))
    progressive = tmp_path / "progressive.jpg"
    Image.fromarray(_gradient(17, 23)).save(progressive, progressive=True, exif=Image.Exif().tobytes())
    assert image_size(jpeg) == (30, 40)
    assert image_size(png) == (12, 50)
    assert image_size(bmp) == (60, 20)
    assert image_size(progressive) == (17, 23)


def test_good_images_pass_all_checks(jpeg: Path) -> None:
    assert image_problem(jpeg) is None
    assert image_problem(jpeg, decode=True) is None
    check_image(jpeg, decode=True)


def _damage(path: Path, kind: str) -> Path:
    data = path.read_bytes()
    damaged = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "random": np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes(),
        "text": b"<html>404 Not Found</html>",
    }[kind]
    target = path.with_name(f"{kind}{path.suffix}")
    target.write_bytes(damaged)
    return target


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("empty", "empty file"),
        ("truncated", "truncated JPEG"),
        ("random", "not an image"),
        ("text", "not an image"),
    ],
)
def test_damaged_jpeg_is_reported(jpeg: Path, kind: str, reason: str) -> None:
    damaged = _damage(jpeg, kind)
    assert reason in image_problem(damaged)
    for call in (check_image, read_image_rgb):
        with pytest.raises(DataError, match=reason) as error:
            call(damaged)
        assert str(damaged) in str(error.value) and "Fix:" in str(error.value)


def test_truncated_png_is_reported(tmp_path: Path) -> None:
    damaged = _damage(write_image_rgb(tmp_path / "x.png", _gradient()), "truncated")
    assert "truncated PNG" in image_problem(damaged)


def test_corrupt_body_with_valid_ends_fails_decode_check(jpeg: Path) -> None:
    data = jpeg.read_bytes()
    corrupt = jpeg.with_name("corrupt.jpg")
    corrupt.write_bytes(data[:3] + b"\x00" * (len(data) - 5) + data[-2:])
    assert image_problem(corrupt) is None  # the cheap check only sees the ends
    assert "cannot be decoded" in image_problem(corrupt, decode=True)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    assert image_problem(missing, verify=False) == MISSING_FILE
    with pytest.raises(DataError, match="missing file") as error:
        read_image_rgb(missing)
    assert "nope.jpg" in str(error.value)


def test_locate_images_prefers_first_folder_and_expects_jpg(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_image_rgb(first / "x.png", _gradient())
    write_image_rgb(second / "x.jpg", _gradient())
    write_image_rgb(second / "y.JPG", _gradient())
    (second / "z.txt").write_text("not an image")
    paths = locate_images(["x", "y", "z"], [first, second])
    assert paths == [str(first / "x.png"), str(second / "y.JPG"), str(first / "z.jpg")]


def test_damaged_entropy_data_with_intact_ends_is_found_when_decoding(tmp_path: Path) -> None:
    damaged = damage_jpeg_middle(
        write_image_rgb(tmp_path / "a.jpg", noise_image(0, (48, 64))), tmp_path / "d.jpg"
    )
    assert cv2.imread(str(damaged)) is not None  # OpenCV decodes it all the same, into a wrong image
    assert image_problem(damaged) is None  # the cheap check sees intact ends
    assert image_problem(damaged, decode=True).startswith("damaged JPEG data (Corrupt JPEG data: ")
    for call in (lambda path: check_image(path, decode=True), read_image_rgb):
        with pytest.raises(DataError, match=r"Unusable image: damaged JPEG data") as error:
            call(damaged)
        assert str(damaged) in str(error.value) and "Fix:" in str(error.value)


def _encodings(rgb: np.ndarray) -> dict[str, bytes]:
    """The same picture as JPEGs of the kinds cameras and tools write."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    options = {
        "progressive": [cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
        "restart markers": [cv2.IMWRITE_JPEG_RST_INTERVAL, 2],
        "4:4:4": [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
    }
    encoded = {name: cv2.imencode(".jpg", bgr, flags)[1].tobytes() for name, flags in options.items()}
    encoded["grey"] = cv2.imencode(".jpg", bgr[..., 0])[1].tobytes()
    for mode in ("CMYK", "RGB"):
        buffer = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buffer, "JPEG", icc_profile=b"\0" * 128, exif=b"Exif\0\0")
        encoded[f"Pillow {mode} with ICC and Exif"] = buffer.getvalue()
    return encoded


def test_intact_jpeg_kinds_are_not_taken_for_damaged(tmp_path: Path) -> None:
    for name, data in _encodings(_gradient(48, 64)).items():
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        assert image_problem(path, decode=True) is None, name
        assert read_image_rgb(path).shape == (48, 64, 3), name
