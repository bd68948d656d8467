"""Read and check image files with OpenCV, always as 8-bit RGB.

Missing, empty, truncated or corrupt files raise :class:`~helpers.core.errors.DataError` naming the file and
the fix. Truncation is caught from the file's tail (JPEG end-of-image marker, PNG IEND chunk) without
decoding, which is cheap and does not rely on the decoder (OpenCV 4 silently decodes a cut-short JPEG, partly
grey). Damage inside a JPEG's entropy-coded data, which OpenCV and TensorFlow decode into a wrong image with
only a libjpeg warning on stderr, is caught wherever an image is decoded, by a strict libjpeg-turbo decode.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from helpers.core.errors import DataError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
"""File suffixes (lower case) the dataset loaders treat as images."""

MISSING_FILE = "missing file"
"""The problem reported for an image path with no file behind it."""
CANNOT_DECODE = "cannot be decoded (corrupt image data)"
DAMAGED_JPEG = "damaged JPEG data"
"""The start of the problem reported for a JPEG whose data libjpeg-turbo finds corrupt (the rest says how)."""

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
"""The first four bytes of a TIFF file (little- and big-endian): TensorFlow cannot decode it, OpenCV can."""
_OTHER_MAGICS = (b"BM", *TIFF_MAGICS, b"RIFF")
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"
_TAIL_PADDING = b"\x00\r\n "
_PROBE_BYTES = 32
# JPEG start-of-frame markers (baseline, progressive, lossless, ...); they carry the image size.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_BARE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})
# Starts of libjpeg-turbo messages about what it cannot do, not about damaged data; OpenCV then decides.
_JPEG_LIMITS = ("Unsupported", "Warning:", "Unknown Adobe", "JFIF")
# The colour space to decode each JPEG colour space into (a CMYK file cannot be decoded to RGB).
_JPEG_OUTPUT = {"Gray": "GRAY", "CMYK": "CMYK", "YCCK": "CMYK"}

_FIX_MISSING = "Check the path, or re-extract / re-download the dataset so that the file exists."
_FIX_DAMAGED = (
    "Replace the file with an intact copy (re-download or re-extract it), "
    "or load the dataset with on_error='skip' to leave it out."
)


def locate_images(image_ids: Iterable[str], folders: Sequence[str | Path]) -> list[str]:
    """Path of each image id's file (any image suffix) in the folders, the first folder holding it winning.

    An id with no file gets the path where it is expected (``<first folder>/<id>.jpg``), so that the image
    checks report it as a missing file.
    """
    found: dict[str, str] = {}
    for folder in folders:
        for entry in os.scandir(folder):
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                found.setdefault(stem, entry.path)
    return [found.get(image_id) or os.path.join(folders[0], f"{image_id}.jpg") for image_id in image_ids]


def _content_problem(head: bytes, tail: bytes) -> str | None:
    """Why the first and last bytes of a file do not look like a complete image, or None if they do."""
    if not head:
        return "empty file (0 bytes)"
    tail = tail.rstrip(_TAIL_PADDING)
    if head.startswith(_JPEG_MAGIC):
        return None if tail.endswith(_JPEG_END) else "truncated JPEG (no end-of-image marker)"
    if head.startswith(_PNG_MAGIC):
        return None if tail.endswith(_PNG_END) else "truncated PNG (no IEND chunk)"
    if head.startswith(_OTHER_MAGICS):
        return None
    return "not an image (not JPEG, PNG, BMP, TIFF or WebP data)"


def _decode_problem(data: bytes) -> str | None:
    """Why the bytes of an image do not decode intact, or None: a JPEG strictly by libjpeg-turbo, other
    formats (and JPEG features libjpeg-turbo lacks) by OpenCV.

    Bytes overwritten in a JPEG's entropy-coded data desynchronise its Huffman decoding, which libjpeg
    reports as a warning ("premature end of data segment", "extraneous bytes before marker") that OpenCV
    and TensorFlow print and ignore, returning a wrong image; the strict decode makes it the reason.
    """
    if data.startswith(_JPEG_MAGIC):
        try:
            colorspace = simplejpeg.decode_jpeg_header(data, strict=False)[2]
        except (ValueError, KeyError):  # KeyError: a colour space simplejpeg does not know
            colorspace = None  # no usable header: OpenCV decides below
        if colorspace is not None:
            try:
                simplejpeg.decode_jpeg(data, colorspace=_JPEG_OUTPUT.get(colorspace, "RGB"), strict=True)
                return None
            except ValueError as error:
                if not str(error).startswith(_JPEG_LIMITS):
                    return f"{DAMAGED_JPEG} ({error})"
    return None if _decode(data) is not None else CANNOT_DECODE


def _decode(data: bytes) -> np.ndarray | None:
    """OpenCV's decoding of encoded image bytes, unchanged in depth and channels; None if it fails."""
    try:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None


def image_problem(path: str | Path, *, verify: bool = True, decode: bool = False) -> str | None:
    """Short reason why ``path`` is not a usable image, or None if it passes.

    ``verify=False`` only checks that the file exists (one stat); ``verify=True`` also reads its first and
    last bytes (non-empty, known format, not truncated); ``decode=True`` additionally decodes the whole image
    (a JPEG strictly too, which finds damaged data that decoders let through).
    """
    path = Path(path)
    if not path.is_file():
        return MISSING_FILE
    if not (verify or decode):
        return None
    if decode:
        data = path.read_bytes()
        return _content_problem(data[:_PROBE_BYTES], data[-_PROBE_BYTES:]) or _decode_problem(data)
    with path.open("rb") as handle:
        head = handle.read(_PROBE_BYTES)
        handle.seek(max(0, path.stat().st_size - _PROBE_BYTES))
        return _content_problem(head, handle.read())


def _image_error(path: Path, problem: str) -> DataError:
    fix = _FIX_MISSING if problem == MISSING_FILE else _FIX_DAMAGED
    return DataError(f"Unusable image: {problem}.", path=path, fix=fix)


def check_image(path: str | Path, *, decode: bool = False) -> None:
    """Raise DataError if ``path`` is missing, empty, not an image or truncated (with ``decode``: corrupt)."""
    problem = image_problem(path, decode=decode)
    if problem is not None:
        raise _image_error(Path(path), problem)


def _to_rgb8(image: np.ndarray, path: Path) -> np.ndarray:
    """Convert OpenCV's BGR/BGRA/grey array of 8 or 16 bits to an (H, W, 3) uint8 RGB array."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(
            f"Unsupported pixel type {image.dtype}: only 8- and 16-bit images are read.",
            path=path,
            fix="Convert the image to an 8-bit JPEG or PNG.",
        )
    channels = 1 if image.ndim == 2 else image.shape[2]
    conversions = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    if channels not in conversions:
        raise DataError(
            f"Unsupported image with {channels} channels.", path=path, fix="Save it as an RGB JPEG or PNG."
        )
    return cv2.cvtColor(image, conversions[channels])


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array: grey, alpha, palette and 16-bit become 8-bit RGB.

    Alpha is dropped (not blended). A missing, empty, truncated, damaged or corrupt file raises DataError
    naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise _image_error(path, MISSING_FILE)
    data = path.read_bytes()
    problem = _content_problem(data[:_PROBE_BYTES], data[-_PROBE_BYTES:]) or _decode_problem(data)
    image = _decode(data) if problem is None else None
    if image is None:
        raise _image_error(path, problem or CANNOT_DECODE)
    return _to_rgb8(image, path)


def _jpeg_size(handle) -> tuple[int, int] | None:
    """(height, width) from the first JPEG start-of-frame segment, walking segment headers only."""
    handle.seek(2)
    while True:
        marker = handle.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if marker[1] == 0xFF:
            handle.seek(-1, 1)
        elif marker[1] in _JPEG_SOF_MARKERS:
            segment = handle.read(7)
            return struct.unpack(">HH", segment[3:7]) if len(segment) == 7 else None
        elif marker[1] not in _JPEG_BARE_MARKERS:
            length = handle.read(2)
            if len(length) < 2:
                return None
            handle.seek(struct.unpack(">H", length)[0] - 2, 1)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image, read from the JPEG/PNG header without decoding (other formats decode)."""
    path = Path(path)
    check_image(path)
    with path.open("rb") as handle:
        head = handle.read(24)
        if head.startswith(_PNG_MAGIC):
            width, height = struct.unpack(">II", head[16:24])
            return height, width
        size = _jpeg_size(handle) if head.startswith(_JPEG_MAGIC) else None
    if size is not None:
        return size
    height, width = read_image_rgb(path).shape[:2]
    return height, width
