"""Cached backbone features: computed once then read back, keyed by everything that changes them, balanced
feature batches, and a learning-rate sweep that reuses them, checkpoints raw-image models and trains exactly
what training from images trains."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from helpers.core.errors import DataError
from helpers.data.demo import make_demo_dataset
from helpers.data.ham10000 import load_ham10000
from helpers.data.pipeline import load_image_array
from helpers.data.splits import make_lesion_split, save_split
from helpers.models.build import build_model, feature_extractor, head_model
from helpers.models.checkpoints import load_checkpoint, read_metadata
from helpers.training import feature_cache
from helpers.training.feature_cache import cached_features, feature_cache_key, features_dataset
from helpers.training.run import train
from helpers.training.settings import TrainConfig

SIZE = (64, 64)


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "HAM10000"
    make_demo_dataset(root, lesions_per_class=4, images_per_lesion=(1, 2), image_size=SIZE)
    return make_lesion_split(load_ham10000(root), val_fraction=0.3, test_fraction=0.1)


@pytest.fixture(scope="module")
def model():
    return build_model("mobilenetv2", weights=None, input_size=SIZE)


def test_features_are_computed_once_then_read_from_cache(model, frame, tmp_path, monkeypatch) -> None:
    first = cached_features(model, frame, task="multiclass", arch="mobilenetv2", cache_dir=tmp_path)
    assert not first.from_cache and first.path.is_file() and first.path.parent == tmp_path
    assert first.features.shape == (len(frame), 1280)
    monkeypatch.setattr(feature_cache, "compute_features", lambda *a, **k: pytest.fail("recomputed"))
    second = cached_features(model, frame, task="multiclass", arch="mobilenetv2", cache_dir=tmp_path)
    assert second.from_cache and second.path == first.path
    np.testing.assert_array_equal(second.features, first.features)
    np.testing.assert_array_equal(second.labels, frame["label"].to_numpy())


def test_features_equal_the_backbone_on_raw_images(model, frame) -> None:
    subset = frame.iloc[:6]
    features = feature_cache.compute_features(model, subset, task="binary", batch_size=3)
    images = load_image_array(subset["image_path"], SIZE, progress=False).astype(np.float32)
    np.testing.assert_allclose(features, feature_extractor(model)(images, training=False), atol=1e-5)


def test_cache_key_follows_images_split_and_weights(model, frame, tmp_path) -> None:
    paths = frame["image_path"]
    split = tmp_path / "split.csv"
    split.write_text("image_id,partition\na,train\n")
    base = feature_cache_key(model, paths, arch="mobilenetv2", split_file=split)
    assert feature_cache_key(model, paths, arch="mobilenetv2", split_file=split) == base
    assert feature_cache_key(model, paths[:-1], arch="mobilenetv2", split_file=split) != base
    assert feature_cache_key(model, paths, arch="other", split_file=split) != base
    split.write_text("image_id,partition\na,val\n")
    assert feature_cache_key(model, paths, arch="mobilenetv2", split_file=split) != base
    changed = build_model("mobilenetv2", weights=None, input_size=SIZE)
    changed.set_weights(model.get_weights())
    unchanged_key = feature_cache_key(model, paths, arch="mobilenetv2")
    assert feature_cache_key(changed, paths, arch="mobilenetv2") == unchanged_key
    kernel = changed.get_layer("Conv1").kernel
    kernel.assign(kernel + 1e-3)
    assert feature_cache_key(changed, paths, arch="mobilenetv2") != unchanged_key


def test_corrupt_cache_file_names_the_file(model, frame, tmp_path) -> None:
    subset = frame.iloc[:3]
    path = cached_features(model, subset, task="multiclass", arch="mobilenetv2", cache_dir=tmp_path).path
    path.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="unreadable feature cache") as error:
        cached_features(model, subset, task="multiclass", arch="mobilenetv2", cache_dir=tmp_path)
    assert str(path) in str(error.value)


def test_balanced_feature_batches_draw_classes_equally() -> None:
    labels = np.array([0] * 180 + [1] * 20, dtype=np.float32)
    features = np.arange(200, dtype=np.float32)[:, None]
    dataset = features_dataset(features, labels, batch_size=50, balanced=True, seed=1)
    epochs = [np.concatenate([y.numpy() for _, y in dataset]) for _ in range(2)]
    assert [len(epoch) for epoch in epochs] == [200, 200]
    assert all(0.4 < epoch.mean() < 0.6 for epoch in epochs)
    assert not np.array_equal(epochs[0], epochs[1])
    shuffled = np.concatenate([x.numpy()[:, 0] for x, _ in features_dataset(features, labels, batch_size=64)])
    assert sorted(shuffled) == list(range(200)) and list(shuffled) != list(range(200))


def test_lr_sweep_embeds_once_and_equals_training_from_images(frame, tmp_path, monkeypatch) -> None:
    calls, compute = [], feature_cache.compute_features
    monkeypatch.setattr(
        feature_cache, "compute_features", lambda *a, **k: calls.append(a) or compute(*a, **k)
    )
    config = TrainConfig(
        arch="mobilenetv2",
        weights=None,
        input_size=SIZE,
        epochs=1,
        batch_size=8,
        models_dir=str(tmp_path / "models"),
        runs_dir=str(tmp_path / "runs"),
        cache_dir=str(tmp_path / "cache"),
    )
    results = {lr: train(config.for_learning_rate(lr), frame) for lr in (1e-3, 1e-2)}
    assert len(calls) == 2  # train + val embeddings, once for the whole sweep
    assert [(r.run_name, r.version) for r in results.values()] == [
        ("mobilenetv2_multiclass_lr0.001", 1),
        ("mobilenetv2_multiclass_lr0.01", 2),
    ]
    result = results[1e-2]
    loaded, metadata = load_checkpoint(result.checkpoint_path)
    assert metadata["params"]["lr"] == 1e-2
    val = frame[frame["partition"] == "val"].reset_index(drop=True)
    images = load_image_array(val["image_path"], SIZE, progress=False).astype(np.float32)
    cached = cached_features(loaded, val, task="multiclass", arch="mobilenetv2", cache_dir=config.cache_dir)
    assert cached.from_cache
    by_hand = head_model(loaded)(cached.features, training=False)
    np.testing.assert_allclose(loaded(images, training=False), by_hand, atol=1e-5)
    np.testing.assert_allclose(result.model(images, training=False), by_hand, atol=1e-5)
    # Same seed, same batches, same dropout masks: the fast path trains exactly what images would.
    from_images = train(replace(config, lr=1e-2, cache_features=False, run_name="images"), frame)
    assert len(calls) == 2
    np.testing.assert_allclose(from_images.history["loss"], result.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(from_images.history["val_loss"], result.history["val_loss"], rtol=1e-4)
    assert from_images.history["val_balanced_accuracy"] == pytest.approx(
        result.history["val_balanced_accuracy"]
    )


@pytest.mark.real_data
def test_real_ham10000_head_on_cached_imagenet_features(ham_root, keras_home, tmp_path) -> None:
    frame = make_lesion_split(load_ham10000(ham_root, verify_images=False))
    split_file = save_split(frame, tmp_path / "lesion_split.csv")
    weights = keras_home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    config = TrainConfig(
        weights=str(weights),
        epochs=3,
        max_images=140,
        models_dir=str(tmp_path / "models"),
        runs_dir=str(tmp_path / "runs"),
        cache_dir=str(tmp_path / "cache"),
    )
    result = train(config, frame, split_file=split_file, data_description="HAM10000 subset")
    assert len(list((tmp_path / "cache").glob("mobilenetv2_150x200_*.npz"))) == 2
    metadata = read_metadata(result.checkpoint_path)
    assert metadata["split_file"] == str(split_file.resolve()) and metadata["train_images"] <= 141
    assert result.best_metric > 0.2  # ImageNet features beat chance (1/7) even with 140 training images
