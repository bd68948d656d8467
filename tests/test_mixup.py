"""Mixup: each training image blended with a partner of its batch, its target alike, its own share on top;
the augmentation draws unchanged; refused outside training; a tiny run trains on images with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import colour_coded_frame, tiny_train_config

from helpers.core.config import CLASS_NAMES
from helpers.core.errors import SkinLesionError
from helpers.data.demo import make_demo_dataset
from helpers.data.ham10000 import load_ham10000
from helpers.data.pipeline import make_dataset
from helpers.data.splits import make_lesion_split
from helpers.models.checkpoints import read_metadata
from helpers.training.run import train
from helpers.training.settings import TrainConfig

SIZE = (30, 40)


@pytest.fixture
def frame(tmp_path: Path) -> pd.DataFrame:
    """Plain images whose blue channel is 200 - label."""
    return colour_coded_frame(tmp_path, [i % len(CLASS_NAMES) for i in range(24)], SIZE)


def _batches(frame: pd.DataFrame, **options) -> tuple[np.ndarray, np.ndarray]:
    dataset = make_dataset(frame, image_size=SIZE, batch_size=8, training=True, seed=3, **options)
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def test_images_and_targets_are_blended_alike_with_each_images_own_share_on_top(frame) -> None:
    images, targets = _batches(frame, mixup_alpha=0.4)
    assert targets.shape == (24, len(CLASS_NAMES)) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(axis=1), 1, rtol=1e-5)
    assert (targets.max(axis=1) >= 0.5 - 1e-6).all()
    assert (targets.max(axis=1) < 0.99).sum() >= 6, "most images of a Beta(0.4, 0.4) draw are blended"
    # blue = 200 - label, so a blend of two images has blue = 200 - the target's mean class index
    expected_blue = 200 - targets @ np.arange(len(CLASS_NAMES))
    np.testing.assert_allclose(images[:, 0, 0, 2], expected_blue, atol=1e-3)


def test_binary_targets_are_blended_within_zero_one(frame) -> None:
    _, targets = _batches(frame, task="binary", mixup_alpha=0.4)
    assert targets.shape == (24,) and targets.dtype == np.float32
    assert ((targets >= 0) & (targets <= 1)).all() and ((targets > 0.01) & (targets < 0.99)).any()


def test_mixup_leaves_the_augmentation_draws_as_without_it(frame) -> None:
    """A vanishing alpha puts (almost) all weight on each image's own: the augmented images must then be
    those of the same run without mixup (mixup draws from a seed stream of its own)."""
    plain, labels = _batches(frame, augment=True)
    mixed, targets = _batches(frame, augment=True, mixup_alpha=1e-3)
    assert (targets.argmax(axis=1) == labels).all()
    np.testing.assert_allclose(mixed, plain, atol=0.5)


def test_mixup_blends_training_batches_only(frame) -> None:
    with pytest.raises(ValueError, match="training batches only"):
        make_dataset(frame, image_size=SIZE, mixup_alpha=0.2)
    with pytest.raises(ValueError, match="mixup_alpha must be >= 0"):
        make_dataset(frame, image_size=SIZE, training=True, mixup_alpha=-0.1)
    with pytest.raises(ValueError, match="mixup_alpha must be >= 0"):
        make_dataset(frame, image_size=SIZE, training=True, mixup_alpha=float("nan"))
    with pytest.raises(SkinLesionError, match="mixup_alpha must be >= 0"):
        TrainConfig(mixup_alpha=-0.1)


def test_the_loss_of_a_mixup_run_takes_blended_targets() -> None:
    loss = TrainConfig(mixup_alpha=0.2).loss()
    predictions = np.array([[0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05], [0.1, 0.1, 0.1, 0.6, 0.05, 0.03, 0.02]])
    blended = np.zeros((2, 7), dtype=np.float32)
    blended[:, 0], blended[:, 3] = 0.7, 0.3
    expected = -(blended * np.log(predictions)).sum(axis=1).mean()
    np.testing.assert_allclose(float(loss(blended, predictions.astype(np.float32))), expected, rtol=1e-4)
    assert not TrainConfig().soft_targets and TrainConfig(mixup_alpha=0.2).soft_targets


def test_mixup_and_distillation_together_are_refused() -> None:
    """A teacher's share plus a partner's could outweigh the label, and the class weights would follow it."""
    with pytest.raises(SkinLesionError, match="mixup_alpha and distill_from together"):
        TrainConfig(mixup_alpha=0.2, distill_from="teacher.h5")


@pytest.mark.slow
def test_a_mixup_run_trains_its_head_on_images_not_cached_features(tmp_path: Path) -> None:
    root = tmp_path / "HAM10000"
    make_demo_dataset(root, lesions_per_class=3, images_per_lesion=(1, 2), image_size=(64, 64))
    split = make_lesion_split(load_ham10000(root), val_fraction=0.3, test_fraction=0.1)
    settings = tiny_train_config(
        tmp_path, arch="mobilenetv3small", epochs=1, mixup_alpha=0.2, cache_features=True
    )
    result = train(settings, split)
    assert result.checkpoint_path.is_file() and np.isfinite(result.history["loss"]).all()
    assert not (tmp_path / "cache").exists()  # cached features hold one image each, not blends
    assert read_metadata(result.checkpoint_path)["params"]["mixup_alpha"] == 0.2
