"""Cached backbone embeddings: the fast path for training a classifier head on a frozen backbone.

A frozen backbone maps each (non-augmented) image to the same pooled feature vector every epoch, so the
features are computed once and stored as ``.npz`` under ``CACHE_DIR/features/``, keyed by a hash of the
architecture, input size, backbone weights, split file and image list. The head then trains on them
in seconds per epoch, and the full model (backbone + that same head) is what gets checkpointed.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from helpers.core import config
from helpers.core.atomic import atomic_path
from helpers.core.errors import DataError
from helpers.data.pipeline import balanced_indices, frame_labels, make_dataset
from helpers.models.build import feature_extractor
from helpers.training.callbacks import ValidationMetric


@dataclass(frozen=True)
class FeatureSet:
    """One partition's pooled backbone features (N, D) aligned with its labels, and the cache file."""

    features: np.ndarray
    labels: np.ndarray
    path: Path
    from_cache: bool


def feature_cache_key(
    model: keras.Model,
    image_paths: Sequence[str] | pd.Series,
    *,
    arch: str,
    split_file: str | Path | None = None,
) -> str:
    """SHA-256 identifying one set of features: architecture, input size, backbone weights, split file
    contents and image list (paths, sizes, modification times).

    The backbone is identified by hashing its actual weight values, which covers "imagenet", a weights
    file, a seeded random init and a backbone changed by fine-tuning alike.
    """
    digest = hashlib.sha256()
    height, width = model.input_shape[1:3]
    parts = (
        arch,
        f"{height}x{width}",
        _weights_digest(model),
        _file_digest(split_file),
        _images_digest(image_paths),
    )
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def _weights_digest(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for value in feature_extractor(model).get_weights():
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def _file_digest(path: str | Path | None) -> str:
    if path is None:
        return "no split file"
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as error:
        raise DataError(
            f"cannot read the split file ({error})", path=path, fix="check the split path"
        ) from error


def _images_digest(image_paths: Sequence[str] | pd.Series) -> str:
    digest = hashlib.sha256()
    for path in image_paths:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise DataError(
                "image file is missing", path=path, fix="rebuild the frame with its loader"
            ) from error
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached_features(
    model: keras.Model,
    frame: pd.DataFrame,
    *,
    task: str,
    arch: str,
    split_file: str | Path | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
) -> FeatureSet:
    """The pooled backbone features of ``frame``'s images (no augmentation) and the task's labels: read
    from the cache when present, else computed once with :func:`compute_features` and stored atomically."""
    labels = frame_labels(frame, task)
    key = feature_cache_key(model, frame["image_path"], arch=arch, split_file=split_file)
    height, width = model.input_shape[1:3]
    path = Path(cache_dir or config.FEATURE_CACHE_DIR) / f"{arch}_{height}x{width}_{key[:24]}.npz"
    if path.is_file():
        return FeatureSet(_read_features(path, len(frame)), labels, path, from_cache=True)
    features = compute_features(model, frame, task=task, batch_size=batch_size)
    with atomic_path(path) as tmp:
        np.savez(tmp, features=features)
    return FeatureSet(features, labels, path, from_cache=False)


def compute_features(
    model: keras.Model, frame: pd.DataFrame, *, task: str, batch_size: int = 64
) -> np.ndarray:
    """Run ``feature_extractor(model)`` over ``frame``'s images in order (same decoding as training, no
    augmentation) and return float32 (N, D) features, with a progress bar."""
    extractor = feature_extractor(model)
    dataset = make_dataset(frame, task=task, image_size=tuple(model.input_shape[1:3]), batch_size=batch_size)
    batches = math.ceil(len(frame) / batch_size)
    features = [
        np.asarray(extractor.predict_on_batch(images))
        for images, _ in tqdm(dataset, total=batches, desc="Embedding images", unit="batch")
    ]
    return np.concatenate(features).astype(np.float32)


def _read_features(path: Path, count: int) -> np.ndarray:
    try:
        with np.load(path) as data:
            features = data["features"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(
            f"unreadable feature cache ({error})", path=path, fix="delete it; it is recomputed"
        ) from error
    if features.ndim != 2 or len(features) != count:
        raise DataError(
            f"cached features have shape {features.shape}, expected {count} rows",
            path=path,
            fix="delete the file; it is recomputed on the next run",
        )
    return features


def features_dataset(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    balanced: bool = False,
    seed: int = 42,
) -> tf.data.Dataset:
    """Training batches of ``(features, labels)``, reshuffled every epoch (seeded); ``balanced`` instead
    draws each epoch ``len(labels)`` rows with replacement, every class equally likely."""
    count = len(labels)
    if balanced:
        indices = balanced_indices(labels, seed).take(len(labels))
    else:
        indices = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
    features_tensor, labels_tensor = tf.constant(features), tf.constant(labels)
    return (
        indices.batch(batch_size)
        .map(lambda index: (tf.gather(features_tensor, index), tf.gather(labels_tensor, index)))
        .prefetch(tf.data.AUTOTUNE)
    )


def train_head_on_features(
    head: keras.Model,
    train: FeatureSet,
    val: FeatureSet,
    *,
    metric: str,
    epochs: int,
    initial_epoch: int = 0,
    batch_size: int = 32,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    class_weight: dict[int, float] | None = None,
    balanced: bool = False,
    seed: int = 42,
) -> keras.callbacks.History:
    """Fit the compiled ``head_model(model)`` on cached train features, scoring ``metric`` on the whole
    validation feature set every epoch (a :class:`ValidationMetric` runs before ``callbacks``).

    The head shares its layers with the full model, so the full model is trained by this call.
    """
    dataset = features_dataset(
        train.features, train.labels, batch_size=batch_size, balanced=balanced, seed=seed
    )
    monitor = ValidationMetric(val.features, val.labels, metric=metric, loss=head.loss)
    return head.fit(
        dataset,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=[monitor, *callbacks],
        class_weight=class_weight,
        shuffle=False,
        verbose=0,
    )
