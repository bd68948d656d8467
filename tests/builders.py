"""Small synthetic inputs shared by the tests: noise images, HAM10000 metadata rows, an ISIC 2018 test
folder, a lesion split of demo data, untrained checkpoints and their operating points.

Keras is imported only inside :func:`save_untrained_checkpoint`, so test modules that never build a model
stay quick to collect.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from helpers.core import config
from helpers.core.config import CLASS_NAMES, MALIGNANT_CLASSES
from helpers.data.demo import make_demo_dataset
from helpers.data.ham10000 import load_ham10000
from helpers.data.isic2018 import DX_COLUMNS, GROUND_TRUTH_FILE
from helpers.data.splits import make_lesion_split, save_split
from helpers.evaluation.operating_point import operating_point_path, save_operating_point
from helpers.training.settings import TrainConfig

HAM_ROWS: list[tuple[str, ...]] = [
    ("HAM_1", "ISIC_0000001", "nv", "follow_up", "45.0", "male", "back"),
    ("HAM_1", "ISIC_0000002", "nv", "follow_up", "45.0", "male", "back"),
    ("HAM_2", "ISIC_0000003", "mel", "histo", "", "female", "face"),
    ("HAM_3", "ISIC_0000004", "bcc", "histo", "70.0", "unknown", "trunk"),
    ("HAM_4", "ISIC_0000005", "df", "consensus", "30.0", "male", "lower extremity"),
    ("HAM_5", "ISIC_0000006", "vasc", "histo", "60.0", "female", "abdomen"),
]
"""HAM10000 metadata rows (columns of helpers.data.ham10000.METADATA_COLUMNS): five lesions, one with two
images, one without an age."""

ISIC_HEADER = "image," + ",".join(DX_COLUMNS)
FIRST_ISIC_NUMBER = 34524
"""The number of the first ISIC 2018 Task 3 test image, ISIC_0034524."""


def write_image_rgb(path: Path, image: np.ndarray) -> Path:
    """Encode an (H, W, 3) uint8 RGB (or (H, W) grey) array in the format of the path's suffix."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(path.suffix, pixels)
    assert ok, f"OpenCV could not encode {path.suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes())
    return path


def colour_coded_frame(folder: Path, labels: Sequence[int], size: tuple[int, int] = (30, 40)) -> pd.DataFrame:
    """One plain lossless PNG per label whose colour encodes its row and label (red = 5 * row + 3, green
    100, blue = 200 - label), with the columns of a loaded dataset, so tests can tell which row a pixel
    came from and that its label travelled with it."""
    rows = []
    for row, label in enumerate(labels):
        rgb = np.full((*size, 3), (5 * row + 3, 100, 200 - label), dtype=np.uint8)
        path = write_image_rgb(folder / f"img_{row}.png", rgb)
        dx = CLASS_NAMES[label]
        rows.append({"image_id": f"img_{row}", "image_path": str(path), "lesion_id": f"L{row}", "dx": dx})
    frame = pd.DataFrame(rows)
    frame["label"] = [int(label) for label in labels]
    frame["malignant"] = frame["dx"].isin(MALIGNANT_CLASSES).astype(int)
    return frame


def noise_image(seed: int, size: tuple[int, int] = (16, 16)) -> np.ndarray:
    """A uint8 RGB image of uniform noise, shaped (height, width, 3); the same seed gives the same image."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def write_noise_image(path: Path, seed: int, size: tuple[int, int] = (16, 16)) -> Path:
    """Write :func:`noise_image` to ``path`` in the format of its suffix (folders are created)."""
    return write_image_rgb(path, noise_image(seed, size))


def isic_truth_row(image_id: str, ones: Iterable[int]) -> str:
    """One ground-truth CSV line: the image id, then 1.0 in the class columns ``ones``, 0.0 elsewhere."""
    ones = set(ones)
    return ",".join([image_id, *("1.0" if column in ones else "0.0" for column in range(len(DX_COLUMNS)))])


def write_isic_truth(path: Path, rows: Sequence[str], header: str = ISIC_HEADER) -> Path:
    """Write an ISIC 2018 ground-truth CSV with ``header`` and the given lines."""
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def write_isic2018_test_set(folder: Path, classes: Sequence[int], size: tuple[int, int] = (16, 16)) -> Path:
    """The ISIC 2018 Task 3 test layout in ``folder``: noise JPEGs ISIC_0034524, ... whose diagnoses are
    the DX_COLUMNS indices ``classes``, with the ground-truth CSV beside them."""
    rows = []
    for index, column in enumerate(classes):
        image_id = f"ISIC_{FIRST_ISIC_NUMBER + index:07d}"
        write_noise_image(folder / f"{image_id}.jpg", index, size)
        rows.append(isic_truth_row(image_id, (column,)))
    write_isic_truth(folder / GROUND_TRUTH_FILE, rows)
    return folder


def split_demo_data(
    demo_root: Path, split_file: Path, *, demo_options: dict | None = None, **split_options: object
) -> tuple[Path, pd.DataFrame, Path]:
    """Synthetic demo data at ``demo_root`` (made, or reused, with ``demo_options``) and a lesion split of
    it (``split_options`` go to make_lesion_split) saved at ``split_file``: (data root, split, split file)."""
    root = make_demo_dataset(demo_root, **(demo_options or {}))
    split = make_lesion_split(load_ham10000(root), **split_options)
    return root, split, save_split(split, split_file)


def save_operating_point_beside(
    checkpoint: Path, *, threshold: float, temperature: float, **point: object
) -> Path:
    """Save a checkpoint's operating point (target sensitivity 0.9, no validation metrics) beside it;
    ``point`` may add class_bias and malignant_after_bias."""
    return save_operating_point(
        operating_point_path(checkpoint),
        threshold=threshold,
        target_sensitivity=0.9,
        temperature=temperature,
        val_metrics={},
        checkpoint=checkpoint,
        **point,
    )


def save_untrained_checkpoint(
    path: Path,
    *,
    arch: str = "light_cnn",
    task: str = "multiclass",
    input_size: tuple[int, int] = (32, 40),
    **metadata: object,
) -> Path:
    """Save a randomly initialised ``arch`` model for ``task`` at ``path`` with a sidecar naming its task,
    classes, input size and architecture, plus the extra ``metadata`` (e.g. split_file, val_metric)."""
    from helpers.models.build import build_model
    from helpers.models.checkpoints import save_checkpoint

    classes = config.CLASS_NAMES if task == "multiclass" else config.BINARY_CLASS_NAMES
    model = build_model(arch, task=task, num_classes=len(classes), input_size=input_size, weights=None)
    sidecar = {"task": task, "class_names": list(classes), "input_size": list(input_size), "arch": arch}
    return save_checkpoint(model, path, {**sidecar, **metadata})


def stored_weight_dtypes(path: Path) -> set[str]:
    """The dtypes of the weight arrays stored in a Keras ``.h5`` file (what is on disk, not what loads)."""
    import h5py

    stored = set()
    with h5py.File(path, "r") as file:
        file["model_weights"].visititems(
            lambda _, item: stored.add(item.dtype.name) if isinstance(item, h5py.Dataset) else None
        )
    return stored


def flip_sensitive_model(input_size: tuple[int, int]):
    """Softmax of a fixed random linear map of the pixels into 7 classes: its output changes when the image
    is flipped (a keras.Model)."""
    import keras

    inputs = keras.Input((*input_size, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(
        7, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(0, 0.05, seed=1)
    )
    return keras.Model(inputs, dense(x))


def damage_jpeg_middle(source: Path, target: Path, count: int = 64) -> Path:
    """Copy a JPEG to ``target`` with ``count`` bytes in the middle of its entropy-coded data set to zero:
    its start and end markers stay intact, and OpenCV and TensorFlow still decode it (into a wrong image)."""
    data = bytearray(source.read_bytes())
    scan = data.index(b"\xff\xda")
    start = scan + 2 + int.from_bytes(data[scan + 2 : scan + 4], "big")
    middle = (start + len(data) - 2) // 2
    assert len(data) - 2 - start > 2 * count, "too little entropy-coded data to damage"
    data[middle - count // 2 : middle + count - count // 2] = bytes(count)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes(data))
    return target


def leave_killed_write(target: Path, *, folder: bool = False) -> Path:
    """Start an atomic write of ``target`` (a file, or a folder with ``folder``) in a process killed (SIGKILL)
    before it finishes; return the hidden temporary it leaves beside the target."""
    opener = "staging_directory" if folder else "atomic_path"
    code = (
        f"import os, sys\nfrom helpers.core.atomic import {opener}\n"
        f"tmp = {opener}(sys.argv[1]).__enter__()\n"
        "(tmp / 'half' if tmp.is_dir() else tmp).write_bytes(b'half')\nos.kill(os.getpid(), 9)"
    )
    before = set(target.parent.glob(".*")) if target.parent.is_dir() else set()
    subprocess.run([sys.executable, "-c", code, str(target)], check=False, timeout=60)
    (left,) = set(target.parent.glob(".*")) - before
    return left


def tiny_train_config(folder: Path, **overrides: object) -> TrainConfig:
    """A two-epoch light_cnn run at 64x64 from random weights, files under ``folder``: seconds on a CPU."""
    params = {
        "arch": "light_cnn",
        "weights": None,
        "input_size": (64, 64),
        "epochs": 2,
        "batch_size": 8,
        "models_dir": str(folder / "models"),
        "runs_dir": str(folder / "runs"),
        "cache_dir": str(folder / "cache"),
    }
    return TrainConfig(**{**params, **overrides})
