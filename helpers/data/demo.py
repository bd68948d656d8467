"""A small synthetic dataset in the exact HAM10000 layout, so every notebook and test runs without real data.

The lesions are drawn (class-dependent colour, border and texture), not photographed: results on them
prove that the code runs end to end and say nothing about medicine.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.core import config
from helpers.core.atomic import staging_directory
from helpers.core.errors import DataError
from helpers.data.ham10000 import IMAGE_FOLDERS, MASK_FOLDER, METADATA_COLUMNS, METADATA_FILE

GENERATOR_VERSION = 1
"""Bump when the drawing changes, so datasets made by an older generator are rebuilt."""

MARKER_FILE = "SYNTHETIC_DEMO_DATA"
PARAMETERS_FILE = "demo_parameters.json"
FIRST_SYNTHETIC_ID = 9_000_000
"""Ids start at HAM_9000000 / ISIC_9000000, far above the real ones, so the two can never be mixed up."""

SEXES = ("male", "female")
LOCALIZATIONS = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "neck")
JPEG_QUALITY = 90
EDGE_PX = 2.0
"""Half-width in pixels of the soft lesion border; the mask is exactly where the blend passes 50 %."""

RGB = tuple[float, float, float]
LIGHT_SKIN: RGB = (0.94, 0.80, 0.72)
DARK_SKIN: RGB = (0.62, 0.44, 0.33)
HAIR: RGB = (0.12, 0.08, 0.06)

MARKER_TEXT = (
    "SYNTHETIC DEMO DATA - NOT HAM10000.\n"
    "Every image in this folder was drawn by helpers/demo_data.py. Models trained or evaluated on it\n"
    "prove only that the code runs; the numbers are meaningless for medicine.\n"
)


def _ramp(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 below ``low``, 1 above ``high``, linear in between."""
    return np.clip((x - low) / (high - low), 0.0, 1.0)


def _blend(base: np.ndarray, colour: RGB, weight: np.ndarray | float) -> np.ndarray:
    """Move ``base`` (H, W, 3) towards ``colour`` by ``weight`` (H, W) or a scalar."""
    weight = np.asarray(weight, dtype=np.float32)
    return base + (np.asarray(colour, dtype=np.float32) - base) * (
        weight[..., None] if weight.ndim else weight
    )


def _fill(shape: tuple[int, int], colour: RGB) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, dtype=np.float32), (*shape, 3)).copy()


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] with about ``cells`` blobs across the shorter side."""
    height, width = shape
    small = rng.random((cells + 1, math.ceil((cells + 1) * width / height))).astype(np.float32)
    return np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _random_walk_lines(rng: np.random.Generator, d: np.ndarray, count: int, step: float) -> np.ndarray:
    """Thin branching-looking lines (vessels) starting inside the lesion, as a [0, 1] layer."""
    layer = np.zeros(d.shape, dtype=np.uint8)
    starts = np.flatnonzero(d.ravel() < 0.6)
    for start in rng.choice(starts, size=count):
        y, x = divmod(int(start), d.shape[1])
        angle = rng.uniform(0, 2 * np.pi)
        angles = angle + np.cumsum(rng.normal(0, 0.6, 6))
        points = np.stack(
            [x + np.cumsum(step * np.cos(angles)), y + np.cumsum(step * np.sin(angles))], axis=1
        )
        points = np.vstack([[x, y], points]).astype(np.int32)
        cv2.polylines(layer, [points], isClosed=False, color=255, thickness=1, lineType=cv2.LINE_AA)
    return layer.astype(np.float32) / 255.0


def _paint_nv(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Melanocytic nevus: even mid-brown with a faint network, a little darker in the centre."""
    colour = _fill(d.shape, (0.50, 0.32, 0.20))
    colour = _blend(
        colour, (0.36, 0.21, 0.12), 0.6 * (1 - _ramp(d, 0.0, 1.0)) * _smooth_noise(rng, d.shape, 3)
    )
    return _blend(colour, (0.40, 0.25, 0.15), 0.5 * _ramp(_smooth_noise(rng, d.shape, 16), 0.55, 0.75))


def _paint_mel(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Melanoma: dark brown with black, blue-grey and reddish patches."""
    coarse, fine = _smooth_noise(rng, d.shape, 4), _smooth_noise(rng, d.shape, 9)
    colour = _fill(d.shape, (0.26, 0.15, 0.09))
    colour = _blend(colour, (0.06, 0.05, 0.05), _ramp(coarse, 0.45, 0.7))
    colour = _blend(colour, (0.38, 0.41, 0.48), 0.75 * _ramp(fine, 0.55, 0.75))
    return _blend(colour, (0.58, 0.28, 0.22), 0.7 * _ramp(1 - coarse, 0.7, 0.85))


def _paint_bkl(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Benign keratosis: light brown, waxy, with fine pale and dark speckles."""
    speckle = cv2.GaussianBlur(rng.random(d.shape).astype(np.float32), (0, 0), 1.2)
    colour = _fill(d.shape, (0.68, 0.53, 0.38))
    colour = _blend(colour, (0.88, 0.80, 0.60), _ramp(speckle, 0.52, 0.58))
    return _blend(colour, (0.45, 0.33, 0.22), 0.8 * _ramp(_smooth_noise(rng, d.shape, 14), 0.65, 0.8))


def _paint_bcc(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Basal cell carcinoma: pink, pearly white sheen, thin red branching vessels."""
    colour = _fill(d.shape, (0.88, 0.60, 0.62))
    colour = _blend(colour, (0.98, 0.94, 0.94), 0.75 * _ramp(_smooth_noise(rng, d.shape, 4), 0.5, 0.8))
    vessels = _random_walk_lines(rng, d, count=5, step=0.05 * min(d.shape))
    return _blend(colour, (0.72, 0.06, 0.14), vessels)


def _paint_akiec(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Actinic keratosis / Bowen: red, rough, with off-white scale."""
    scale = cv2.GaussianBlur(rng.random(d.shape).astype(np.float32), (0, 0), 2.0)
    colour = _fill(d.shape, (0.80, 0.38, 0.34))
    colour = _blend(colour, (0.94, 0.91, 0.84), _ramp(scale, 0.52, 0.56))
    return _blend(colour, (0.66, 0.24, 0.22), 0.5 * _smooth_noise(rng, d.shape, 6))


def _paint_df(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dermatofibroma: brown ring around a pale, scar-like centre."""
    colour = _fill(d.shape, (0.92, 0.85, 0.80))
    ring = _ramp(d, 0.3, 0.65) * (0.8 + 0.2 * _smooth_noise(rng, d.shape, 5))
    return _blend(colour, (0.52, 0.34, 0.22), ring)


def _paint_vasc(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vascular lesion: red to purple lacunae."""
    colour = _fill(d.shape, (0.66, 0.12, 0.24))
    colour = _blend(colour, (0.36, 0.07, 0.32), _ramp(_smooth_noise(rng, d.shape, 7), 0.5, 0.65))
    return _blend(colour, (0.85, 0.16, 0.20), 0.7 * _ramp(_smooth_noise(rng, d.shape, 7), 0.6, 0.75))


@dataclass(frozen=True)
class _ClassStyle:
    """How lesions of one class are drawn and how many of them there are."""

    share: float  # lesions relative to ``lesions_per_class``: nv largest, as in HAM10000
    radius: tuple[float, float]  # lesion radius range, as a fraction of the shorter image side
    irregularity: float  # amplitude of the border's angular harmonics
    smoothness: float  # how fast higher border harmonics fade: high = smooth oval, low = jagged
    paint: Callable[[np.ndarray, np.random.Generator], np.ndarray]


CLASS_STYLES: dict[str, _ClassStyle] = {
    "akiec": _ClassStyle(0.75, (0.25, 0.34), 0.10, 0.8, _paint_akiec),
    "bcc": _ClassStyle(1.0, (0.22, 0.32), 0.07, 1.0, _paint_bcc),
    "bkl": _ClassStyle(1.25, (0.26, 0.36), 0.08, 1.0, _paint_bkl),
    "df": _ClassStyle(0.75, (0.20, 0.28), 0.03, 1.5, _paint_df),
    "mel": _ClassStyle(1.25, (0.28, 0.40), 0.22, 0.4, _paint_mel),
    "nv": _ClassStyle(3.0, (0.18, 0.30), 0.03, 1.8, _paint_nv),
    "vasc": _ClassStyle(0.75, (0.16, 0.26), 0.06, 1.2, _paint_vasc),
}
HARMONICS = np.arange(2, 9)


@dataclass(frozen=True)
class _Lesion:
    """One synthetic lesion: a patient's skin, a fixed shape and tint, photographed one or more times."""

    lesion_id: str
    dx: str
    n_images: int
    age: float
    sex: str
    localization: str
    seed: tuple[int, int]

    def metadata_row(self, image_id: str) -> tuple:
        """One row of the metadata CSV, in :data:`METADATA_COLUMNS` order."""
        return (self.lesion_id, image_id, self.dx, "synthetic", self.age, self.sex, self.localization)


def _lesion_plan(params: dict, rng: np.random.Generator) -> list[_Lesion]:
    """Decide every lesion's class, metadata and image count (class sizes imbalanced like HAM10000)."""
    classes = [
        dx
        for dx in config.CLASS_NAMES
        for _ in range(max(1, round(params["lesions_per_class"] * CLASS_STYLES[dx].share)))
    ]
    numbers = rng.permutation(len(classes)) + FIRST_SYNTHETIC_ID
    low, high = params["images_per_lesion"]
    return [
        _Lesion(
            lesion_id=f"HAM_{number:07d}",
            dx=dx,
            n_images=int(rng.integers(low, high + 1)),
            age=float(rng.integers(4, 18) * 5),
            sex=str(rng.choice(SEXES)),
            localization=str(rng.choice(LOCALIZATIONS)),
            seed=(params["seed"], index),
        )
        for index, (dx, number) in enumerate(zip(classes, numbers, strict=True))
    ]


def _lesion_distance(
    size: tuple[int, int], style: _ClassStyle, lesion_rng: np.random.Generator, image_rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Distance from the lesion centre over the irregular border radius (< 1 inside), and the radius in px.

    The shape comes from ``lesion_rng`` (shared by every image of a lesion); position, rotation and
    scale jitter come from ``image_rng``.
    """
    height, width = size
    radius = lesion_rng.uniform(*style.radius) * min(size) * image_rng.uniform(0.9, 1.1)
    amplitudes = (
        style.irregularity * lesion_rng.uniform(0.3, 1.0, HARMONICS.size) / HARMONICS**style.smoothness
    )
    phases = lesion_rng.uniform(0, 2 * np.pi, HARMONICS.size).astype(np.float32)
    centre_y, centre_x = np.array(size) * (0.5 + image_rng.uniform(-0.06, 0.06, 2))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = np.arctan2(yy - centre_y, xx - centre_x) - np.float32(image_rng.uniform(0, 2 * np.pi))
    harmonics = np.cos(HARMONICS[:, None, None].astype(np.float32) * theta + phases[:, None, None])
    border = 1 + np.tensordot(amplitudes.astype(np.float32), harmonics, 1)
    distance = np.hypot(yy - centre_y, xx - centre_x) / (radius * np.maximum(border, 0.3))
    return distance.astype(np.float32), radius


def _skin(size: tuple[int, int], tone: float, rng: np.random.Generator) -> np.ndarray:
    """Skin background of a given tone (0 light .. 1 dark) with uneven lighting."""
    skin = _blend(_fill(size, LIGHT_SKIN), DARK_SKIN, tone)
    return skin * (0.93 + 0.14 * _smooth_noise(rng, size, 2))[..., None]


def _vignette(size: tuple[int, int], strength: float) -> np.ndarray:
    """Darkening towards the corners, like the round field of a dermatoscope."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((yy - height / 2) / (height / 2)) ** 2 + ((xx - width / 2) / (width / 2)) ** 2
    return 1 - strength * _ramp(r2, 0.7, 2.0)


def _hairs(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Zero to three thin dark curves across the image, as a [0, 1] layer."""
    layer = np.zeros(size, dtype=np.uint8)
    for _ in range(rng.choice(4, p=[0.65, 0.2, 0.1, 0.05])):
        ends = rng.uniform(0, 1, (3, 2)) * [size[1], size[0]]
        t = np.linspace(0, 1, 20)[:, None]
        curve = (1 - t) ** 2 * ends[0] + 2 * t * (1 - t) * ends[1] + t**2 * ends[2]
        cv2.polylines(layer, [curve.astype(np.int32)], False, 255, thickness=1, lineType=cv2.LINE_AA)
    return layer.astype(np.float32) / 255.0


def render_image(
    dx: str, size: tuple[int, int], lesion_seed: tuple[int, int], image_number: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of a lesion: (RGB uint8 image, uint8 mask with lesion = 255), both ``size`` (H, W).

    Images with the same ``lesion_seed`` share skin, shape and tint; ``image_number`` varies the jitter.
    """
    style = CLASS_STYLES[dx]
    lesion_rng = np.random.default_rng(lesion_seed)
    image_rng = np.random.default_rng([*lesion_seed, image_number])
    tone, tint = lesion_rng.uniform(0, 1), 1 + lesion_rng.normal(0, 0.06, 3).astype(np.float32)
    distance, radius = _lesion_distance(size, style, lesion_rng, image_rng)
    alpha = np.clip(0.5 + (1 - distance) * radius / (2 * EDGE_PX), 0.0, 1.0)[..., None]
    lesion = np.clip(style.paint(distance, image_rng) * tint * image_rng.uniform(0.92, 1.08), 0, 1)
    image = _skin(size, tone, image_rng) * (1 - alpha) + lesion * alpha
    image = (
        _blend(image, HAIR, _hairs(size, image_rng)) * _vignette(size, image_rng.uniform(0, 0.7))[..., None]
    )
    image += image_rng.normal(0, 0.012, image.shape).astype(np.float32)
    mask = np.where(distance < 1, 255, 0).astype(np.uint8)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mask


def _write_image(
    folder: Path, image_id: str, part: str, lesion: _Lesion, image_number: int, size: tuple[int, int]
) -> None:
    """Write one JPEG into its image part folder and its 1-bit PNG mask into the mask folder."""
    image, mask = render_image(lesion.dx, size, lesion.seed, image_number)
    ok_image, jpeg = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    ok_mask, png = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_BILEVEL, 1])
    if not (ok_image and ok_mask):
        raise DataError(f"OpenCV could not encode synthetic image {image_id}", path=folder)
    (folder / part / f"{image_id}.jpg").write_bytes(jpeg.tobytes())
    (folder / MASK_FOLDER / f"{image_id}_segmentation.png").write_bytes(png.tobytes())


def _write_dataset(folder: Path, params: dict) -> None:
    """Draw every image and write metadata, marker, README and parameters into an empty ``folder``."""
    rng = np.random.default_rng(params["seed"])
    lesions = _lesion_plan(params, rng)
    total = sum(lesion.n_images for lesion in lesions)
    numbers = iter((rng.permutation(total) + FIRST_SYNTHETIC_ID).tolist())
    first_of_part_2 = FIRST_SYNTHETIC_ID + (total + 1) // 2
    for sub in (*IMAGE_FOLDERS, MASK_FOLDER):
        (folder / sub).mkdir()
    rows = []
    with tqdm(total=total, desc="Drawing synthetic demo images", unit="img", disable=None) as bar:
        for lesion in lesions:
            for image_number in range(lesion.n_images):
                number = next(numbers)
                image_id = f"ISIC_{number:07d}"
                part = IMAGE_FOLDERS[number >= first_of_part_2]
                _write_image(folder, image_id, part, lesion, image_number, tuple(params["image_size"]))
                rows.append(lesion.metadata_row(image_id))
                bar.update()
    metadata = pd.DataFrame(rows, columns=METADATA_COLUMNS)
    metadata.sort_values(["lesion_id", "image_id"]).to_csv(folder / METADATA_FILE, index=False)
    (folder / MARKER_FILE).write_text(MARKER_TEXT, encoding="utf-8")
    (folder / "README.txt").write_text(_readme(metadata, params), encoding="utf-8")
    (folder / PARAMETERS_FILE).write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")


def _readme(metadata: pd.DataFrame, params: dict) -> str:
    """Human-readable description of a generated dataset: what it is, how it was made, class counts."""
    images = metadata["dx"].value_counts()
    lesions = metadata.drop_duplicates("lesion_id")["dx"].value_counts()
    counts = "\n".join(
        f"  {dx:<6} {lesions[dx]:>4} lesions {images[dx]:>5} images" for dx in config.CLASS_NAMES
    )
    return (
        f"{MARKER_TEXT}\nLayout: the official HAM10000 layout ({METADATA_FILE}, {IMAGE_FOLDERS[0]}/, "
        f"{IMAGE_FOLDERS[1]}/, {MASK_FOLDER}/).\n"
        f"Ids start at HAM_{FIRST_SYNTHETIC_ID} / ISIC_{FIRST_SYNTHETIC_ID} and dx_type is 'synthetic'.\n"
        f"Parameters: {json.dumps(params)}\n\nClasses:\n{counts}\n"
    )


def _parameters(
    lesions_per_class: int, images_per_lesion: tuple[int, int], image_size: tuple[int, int], seed: int
) -> dict:
    """Validated generation parameters, in the JSON form stored beside the data."""
    low, high = images_per_lesion
    if lesions_per_class < 1 or not 1 <= low <= high or min(image_size) < 32:
        raise ValueError(
            "make_demo_dataset needs lesions_per_class >= 1, "
            "1 <= images_per_lesion[0] <= images_per_lesion[1] and image sides >= 32 px; "
            f"got {lesions_per_class}, {images_per_lesion}, {image_size}"
        )
    return {
        "generator_version": GENERATOR_VERSION,
        "lesions_per_class": int(lesions_per_class),
        "images_per_lesion": [int(low), int(high)],
        "image_size": [int(side) for side in image_size],
        "seed": int(seed),
    }


def _stored_parameters(root: Path) -> dict | None:
    """The parameters of the complete demo dataset at ``root``, or None if there is none."""
    try:
        return (
            json.loads((root / PARAMETERS_FILE).read_text(encoding="utf-8"))
            if is_demo_dataset(root)
            else None
        )
    except (OSError, json.JSONDecodeError):
        return None


def _move_into_place(staging: Path, root: Path) -> None:
    """Rename the finished ``staging`` folder onto ``root``, retiring an older demo dataset there."""
    if root.exists() and any(root.iterdir()):
        if not is_demo_dataset(root):
            raise DataError(
                "Refusing to replace a folder that is not a synthetic demo dataset",
                path=root,
                fix="choose a new or empty folder for the demo data, or delete this one yourself",
            )
        retired = root.with_name(f".{root.name}.retired-{uuid.uuid4().hex[:8]}")
        root.rename(retired)
        staging.rename(root)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.replace(root)


def make_demo_dataset(
    root: str | Path = config.DEMO_DIR,
    *,
    lesions_per_class: int = 12,
    images_per_lesion: tuple[int, int] = (1, 3),
    image_size: tuple[int, int] = config.DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write (or reuse) a deterministic synthetic dataset in the HAM10000 layout at ``root`` and return it.

    ``image_size`` is (height, width). An existing demo dataset made with the same parameters is reused
    unless ``overwrite``; the new one is built in a temporary folder beside ``root`` and renamed into place.
    """
    root = Path(root)
    params = _parameters(lesions_per_class, images_per_lesion, image_size, seed)
    if not overwrite and _stored_parameters(root) == params:
        return root
    try:
        with staging_directory(root) as staging:
            _write_dataset(staging, params)
            _move_into_place(staging, root)
    except OSError:
        if _stored_parameters(root) != params:  # else a concurrent process finished the same dataset first
            raise
    return root


def is_demo_dataset(root: str | Path) -> bool:
    """True if ``root`` holds synthetic demo data (it carries the SYNTHETIC_DEMO_DATA marker file)."""
    return (Path(root) / MARKER_FILE).is_file()
