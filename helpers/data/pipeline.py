"""tf.data input pipeline: decode, resize, shuffle, class-balance, augment and batch skin-lesion images.

Datasets yield ``(images, labels)``: images float32 in 0..255 of shape (B, H, W, 3) (models rescale them
themselves); labels int32 class indices of shape (B,) for ``task="multiclass"`` (column ``label``) and float32
0/1 of shape (B,) for ``task="binary"`` (column ``malignant``; Keras matches it to a (B, 1) sigmoid output),
or float32 (B, K) soft ``targets`` in their place (distillation), or blended float targets (mixup). Before
any decoding, every file is checked (decoded once, a JPEG strictly: TensorFlow turns damaged JPEG data into a
wrong image with a mere warning), and unusable files raise one :class:`DataError` listing them; a file that
still fails inside a dataset raises TensorFlow's own error, while :func:`load_image_array` (and so
``cache=True``) names it in a DataError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from helpers.core.config import CLASS_NAMES, DEFAULT_IMAGE_SIZE
from helpers.core.errors import DataError
from helpers.data.augment import AUGMENT_MODES, augment_images, mixup
from helpers.data.images import TIFF_MAGICS, read_image_rgb
from helpers.data.validation import format_listing, image_problems

AUTOTUNE = tf.data.AUTOTUNE
LABEL_COLUMNS: dict[str, str] = {"multiclass": "label", "binary": "malignant"}

DECODE_BATCH = 64


def make_dataset(
    frame: pd.DataFrame,
    *,
    task: str = "multiclass",
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    batch_size: int = 32,
    training: bool = False,
    augment: bool = False,
    cache: bool = False,
    balanced: bool = False,
    seed: int = 42,
    images: np.ndarray | None = None,
    augment_mode: str = "full",
    targets: np.ndarray | None = None,
    mixup_alpha: float = 0.0,
) -> tf.data.Dataset:
    """A batched, prefetched dataset of ``frame``'s images and labels (see the module docstring).

    ``training`` reshuffles every epoch (seeded); otherwise the order is the frame's and repeatable.
    ``balanced`` (training only) samples the classes equally, endlessly, cut into epochs of
    ``len(frame) // batch_size`` batches. ``images`` is a pre-decoded uint8 (N, H, W, 3) array aligned
    with the frame; ``cache=True`` makes one with :func:`load_image_array` (decoding every file once, up
    front; 86 KB per image at 150x200, 0.9 GB for all of HAM10000) so epochs read memory, not files.
    ``augment`` applies :func:`augment_images` to each batch, with ``augment_mode`` (see AUGMENT_MODES).
    ``targets`` (float (N, K), aligned with the frame) are yielded instead of the labels: soft targets for
    distillation; balanced sampling still follows the labels. ``mixup_alpha > 0`` (training only) blends
    every batch's images and targets by :func:`helpers.data.augment.mixup`, after augmentation: the targets
    are then float, one-hot class probabilities (multiclass) or 0/1 (binary) before blending.
    """
    if balanced and not training:
        raise ValueError("balanced sampling draws training batches endlessly: pass training=True with it")
    if not mixup_alpha >= 0 or (mixup_alpha and not training):
        raise ValueError(f"mixup_alpha must be >= 0 and blends training batches only, got {mixup_alpha}")
    if augment_mode not in AUGMENT_MODES:
        raise ValueError(f"augment_mode must be one of {AUGMENT_MODES}, not {augment_mode!r}")
    labels = frame_labels(frame, task)
    if images is None and cache:
        images = load_image_array(frame["image_path"], image_size)
    load_image = _image_loader(frame, image_size, images)
    labels_tensor = tf.constant(labels if targets is None else _checked_targets(targets, len(frame)))
    indices = balanced_indices(labels, seed) if balanced else _epoch_indices(len(frame), training, seed)
    dataset = indices.map(
        lambda index: (load_image(index), tf.gather(labels_tensor, index)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,  # same seed, same batch order
    ).batch(batch_size)
    if balanced:
        dataset = dataset.take(max(1, len(frame) // batch_size))
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda batch, seed_pair: (augment_images(batch[0], seed_pair, mode=augment_mode), batch[1]),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,  # same seed, same batch order
        )
    else:
        dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=AUTOTUNE)
    if mixup_alpha:
        dataset = _mixed(dataset, task, mixup_alpha, seed)
    return dataset.prefetch(AUTOTUNE)


def _mixed(dataset: tf.data.Dataset, task: str, alpha: float, seed: int) -> tf.data.Dataset:
    """``dataset`` with every batch blended by :func:`helpers.data.augment.mixup` (own seed stream, so the
    augmentation draws stay those of a run without mixup)."""

    def as_targets(labels: tf.Tensor) -> tf.Tensor:
        if task == "multiclass" and labels.dtype.is_integer:
            return tf.one_hot(labels, len(CLASS_NAMES))
        return tf.cast(labels, tf.float32)

    seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, seeds).map(
        lambda batch, seed_pair: mixup(batch[0], as_targets(batch[1]), seed_pair, alpha),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


def _checked_targets(targets: np.ndarray, rows: int) -> np.ndarray:
    """``targets`` as float32 (N, K) after checking they align with the frame's ``rows``."""
    targets = np.asarray(targets, dtype=np.float32)
    if targets.ndim != 2 or len(targets) != rows:
        raise ValueError(f"targets must be (N, K) with N = {rows} frame rows, got shape {targets.shape}")
    return targets


def frame_labels(frame: pd.DataFrame, task: str) -> np.ndarray:
    """The task's labels from ``frame``: int32 class indices (multiclass) or float32 0/1 (binary)."""
    if task not in LABEL_COLUMNS:
        raise ValueError(f"task must be one of {list(LABEL_COLUMNS)}, not {task!r}")
    column = LABEL_COLUMNS[task]
    if column not in frame.columns or "image_id" not in frame.columns:
        raise DataError(
            f"the frame lacks the columns image_id and {column!r} needed for task={task!r}",
            fix="build the frame with the dataset loaders (helpers.data.ham10000 etc.)",
        )
    if frame.empty:
        raise DataError("the frame has no images", fix="check the dataset folder and the split partition")
    allowed = range(len(CLASS_NAMES)) if task == "multiclass" else (0, 1)
    values = pd.to_numeric(frame[column], errors="coerce")
    invalid = frame.loc[~values.isin(allowed), "image_id"]
    if len(invalid):
        raise DataError(
            f"{len(invalid)} image(s) have no valid {column!r} for task={task!r}, e.g. {list(invalid[:5])}",
            fix="drop images of unknown diagnosis (label -1) before making a dataset",
        )
    return values.to_numpy(dtype=np.int32 if task == "multiclass" else np.float32)


def _image_loader(
    frame: pd.DataFrame, image_size: tuple[int, int], images: np.ndarray | None
) -> Callable[[tf.Tensor], tf.Tensor]:
    """A function from a row index to that row's uint8 (H, W, 3) image, from files or from ``images``."""
    if images is None:
        paths = tf.constant(checked_paths(frame["image_path"]))
        return lambda index: decode_and_resize(tf.gather(paths, index), image_size)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or len(images) != len(frame):
        raise ValueError(
            f"images must be uint8 (N, H, W, 3) with N = {len(frame)} frame rows, "
            f"got {images.dtype} {images.shape}: make it with load_image_array(frame['image_path'], ...)"
        )
    array = tf.constant(images)
    return lambda index: resize_uint8(tf.gather(array, index), image_size)


def _epoch_indices(count: int, training: bool, seed: int) -> tf.data.Dataset:
    """Row indices in frame order, or reshuffled every epoch when training."""
    indices = tf.data.Dataset.range(count)
    return indices.shuffle(count, seed=seed, reshuffle_each_iteration=True) if training else indices


def balanced_indices(labels: np.ndarray, seed: int) -> tf.data.Dataset:
    """An endless stream of row indices drawing every present class with equal probability."""
    per_class = [
        tf.data.Dataset.from_tensor_slices(np.flatnonzero(labels == value).astype(np.int64))
        .shuffle(int((labels == value).sum()), seed=seed + offset, reshuffle_each_iteration=True)
        .repeat()
        for offset, value in enumerate(np.unique(labels))
    ]
    weights = [1.0 / len(per_class)] * len(per_class)
    return tf.data.Dataset.sample_from_datasets(
        per_class, weights=weights, seed=seed, rerandomize_each_iteration=True
    )


def decode_and_resize(path: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Read one image file as resized RGB uint8: grey, RGBA, palette and 16-bit images become 8-bit RGB.

    TensorFlow decodes JPEG, PNG, BMP, GIF and WebP; TIFF (which it cannot) goes through OpenCV, told apart by
    its first bytes, not its name (a TIFF saved as .jpg is still read).
    """
    contents = tf.io.read_file(path)
    is_tiff = tf.reduce_any(tf.equal(tf.strings.substr(contents, 0, 4), list(TIFF_MAGICS)))
    image = tf.cond(
        is_tiff,
        lambda: tf.numpy_function(_read_with_opencv, [path], tf.uint8, stateful=False),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )
    return resize_uint8(image, image_size)


def _read_with_opencv(path: bytes | np.ndarray) -> np.ndarray:
    return read_image_rgb(np.asarray(path).item().decode())


def resize_uint8(image: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Resize a uint8 (H, W, 3) image to (height, width), antialiased bilinear; kept if already that size."""
    image = tf.ensure_shape(image, [None, None, 3])
    target = tf.constant(image_size, dtype=tf.int32)

    def resized() -> tf.Tensor:
        pixels = tf.image.resize(image, target, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)

    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], target))
    return tf.ensure_shape(tf.cond(same_size, lambda: image, resized), [*image_size, 3])


def load_image_array(
    paths: Sequence[str] | pd.Series, image_size: tuple[int, int], *, progress: bool = True
) -> np.ndarray:
    """Decode and resize every image once into a uint8 (N, H, W, 3) array, for in-memory training.

    Decodes with :func:`image_batches` under a progress bar; missing, damaged or undecodable files raise
    :class:`DataError` naming them.
    """
    paths = [str(path) for path in paths]
    result = np.empty((len(paths), *image_size, 3), dtype=np.uint8)
    filled = 0
    with tqdm(total=len(paths), desc="Decoding images", unit="img", disable=not progress) as bar:
        for batch in image_batches(paths, image_size):
            result[filled : filled + len(batch)] = batch
            filled += len(batch)
            bar.update(len(batch))
    return result


def image_batches(
    paths: Sequence[str] | pd.Series, image_size: tuple[int, int], batch_size: int = DECODE_BATCH
) -> Iterator[np.ndarray]:
    """The images decoded and resized as in training, in order, as uint8 (B, H, W, 3) batches.

    Decoding runs as a parallel tf.data map after :func:`checked_paths`; missing, damaged or undecodable
    files raise :class:`DataError` naming them.
    """
    paths = checked_paths(paths)
    if not paths:
        return
    decoded = iter(
        tf.data.Dataset.from_tensor_slices(paths)
        .map(
            lambda path: decode_and_resize(path, image_size), num_parallel_calls=AUTOTUNE, deterministic=True
        )
        .batch(batch_size)
        .prefetch(AUTOTUNE)
    )
    for start in range(0, len(paths), batch_size):
        try:
            yield next(decoded).numpy()
        except tf.errors.OpError as error:
            raise _decode_error(paths[start : start + batch_size], image_size) from error


def checked_paths(paths: Sequence[str] | pd.Series) -> list[str]:
    """The paths as strings, after checking that every file is a usable image (decoding it, a JPEG strictly);
    DataError listing the missing, damaged and undecodable ones."""
    paths = [str(path) for path in paths]
    problems = image_problems(paths, decode=True)
    bad = [(path, problem) for path, problem in zip(paths, problems, strict=True) if problem is not None]
    if bad:
        raise DataError(
            f"{len(bad)} of {len(paths)} image files are missing or unusable:\n"
            + format_listing([f"{path}: {problem}" for path, problem in bad]),
            path=bad[0][0],
            fix="replace the files (re-download the dataset), or load it with decode_images=True and "
            "on_error='skip' to leave them out",
        )
    return paths


def _decode_error(paths: Sequence[str], image_size: tuple[int, int]) -> DataError:
    """A DataError naming the first of ``paths`` that TensorFlow cannot decode."""
    for path in paths:
        try:
            decode_and_resize(tf.constant(path), image_size)
        except tf.errors.OpError as error:
            return DataError(
                f"cannot decode image ({error.message})",
                path=path,
                fix="replace the file with a valid JPEG/PNG or remove it from the dataset",
            )
    return DataError(
        f"decoding failed in a batch of {len(paths)} images that starts with this file", path=paths[0]
    )
