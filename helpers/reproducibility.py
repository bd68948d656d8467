"""Seeding and device placement for training: one call makes a run repeatable, another picks the GPUs."""

from __future__ import annotations

import keras
import tensorflow as tf


def set_seed(seed: int, *, deterministic_ops: bool = False) -> None:
    """Seed Python's ``random``, NumPy and TensorFlow (via ``keras.utils.set_random_seed``) with ``seed``.

    ``deterministic_ops=True`` also calls ``tf.config.experimental.enable_op_determinism()``: bit-identical
    reruns even on GPU, at some speed cost; it is process-wide and cannot be switched off again.
    """
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def distribution_strategy() -> tf.distribute.Strategy:
    """A ``MirroredStrategy`` over all visible GPUs when there are several, else the default strategy."""
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
