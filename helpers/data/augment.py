"""Training-time augmentation of image batches: flips, rotation and zoom (one affine warp) and colour
jitter, each image drawn from a stateless seed so a run is repeatable; and mixup, which blends image pairs
and their targets alike.

Lesions in dermoscopy have no up or down, so every flip and rotation is a valid view of the same lesion;
colour jitter stands in for other cameras and lighting. Everything works on (B, H, W, 3) batches in 0..255.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class Strength:
    """How far augmentation moves an image: rotation in degrees, zoom factor (>1 zooms in), brightness in
    0..255 units, contrast and saturation factors, hue as a fraction of the circle, a per-channel gain
    (another camera's white balance; 0 = none), whether half the images get a random softening blur, and the
    largest unsharp-masking amount given to half the images instead (0 = none)."""

    rotation_degrees: float
    zoom: tuple[float, float]
    brightness: float
    contrast: tuple[float, float]
    saturation: tuple[float, float]
    hue: float
    channel_gain: float = 0.0
    blur: bool = False
    sharpen: float = 0.0


FULL = Strength(20.0, (0.9, 1.15), 25.0, (0.8, 1.2), (0.8, 1.2), 0.03)
STRONG = Strength(180.0, (0.8, 1.4), 50.0, (0.6, 1.4), (0.6, 1.4), 0.06, channel_gain=0.15, blur=True)
"""``STRONG`` doubles every colour jitter of ``FULL``, adds the channel gain and blur, and turns and zooms
further: the shift to another clinic's camera, optics and lighting (issue 15's external test)."""
BLUR = dataclasses.replace(FULL, blur=True)
"""``BLUR`` is ``FULL`` plus the softening blur alone: a model that leans less on the finest detail, which
differs between clinics' cameras (smoothing at test time lifted 150x200 models on other clinics' images)."""
SHARPEN = dataclasses.replace(FULL, sharpen=0.6)
"""``SHARPEN`` is ``FULL`` plus random unsharp masking: the other clinics' images of the ISIC 2018 test are
sharper than HAM10000's at the same size (variance of the Laplacian 1.6x at the median, docs/results.md); an
amount of 0.6 raises a HAM10000 image's by up to about 2.4x, covering that."""
_WARPED_MODES = {"full": FULL, "strong": STRONG, "blur": BLUR, "sharpen": SHARPEN}
AUGMENT_MODES: tuple[str, ...] = (*_WARPED_MODES, "light")
"""``full``: flips, rotation and zoom (one affine warp) plus colour jitter (``FULL``); ``light``: flips (and
90-degree turns of square images) plus the same colour jitter, no warp, so the pipeline keeps up with a CPU
train step; ``strong``: the warp and colour jitter of ``STRONG`` plus channel gains and blur; ``blur``:
``full`` plus the blur (``BLUR``); ``sharpen``: ``full`` plus unsharp masking (``SHARPEN``)."""


def augment_images(images: tf.Tensor, seed: tf.Tensor, *, mode: str = "full") -> tf.Tensor:
    """Randomly flip, rotate, zoom and colour-jitter a batch (B, H, W, 3) in 0..255; float32 out, in range.

    Each image gets its own draw from the stateless ``seed`` (shape (2,)): horizontal and vertical flips,
    90-degree turns (square images only; flips already give 180), rotation and zoom with reflected borders,
    then hue, saturation, contrast and brightness jitter, by the mode's ``Strength``. Geometry runs on the
    input dtype (uint8 is twice as fast as float32 here). ``mode="light"`` skips the rotation and zoom warp
    (exact pixel permutations only, several times cheaper). Another mode raises ValueError.
    """
    if mode not in AUGMENT_MODES:
        raise ValueError(f"augment mode must be one of {list(AUGMENT_MODES)}, not {mode!r}")
    geometry_seed, colour_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    if mode == "light":
        return _flips_and_colour(images, geometry_seed, colour_seed)
    strength = _WARPED_MODES[mode]
    detail_seed = None
    if strength.blur or strength.sharpen:  # colour draws then differ from ``full``'s; the warp's do not
        colour_seed, detail_seed = tf.unstack(tf.random.experimental.stateless_split(colour_seed, num=2))
    images = _random_colour(
        tf.cast(_random_geometry(images, geometry_seed, strength), tf.float32), colour_seed, strength
    )
    if strength.blur:
        return _random_blur(images, detail_seed)
    if strength.sharpen:
        return _random_sharpening(images, detail_seed, strength.sharpen)
    return images


@tf.function(jit_compile=True)
def _flips_and_colour(images: tf.Tensor, flip_seed: tf.Tensor, colour_seed: tf.Tensor) -> tf.Tensor:
    """Light augmentation as one XLA kernel: fusing the per-pixel ops makes it 2.5x faster on a CPU, so it
    steals less of the train step's cores (the full mode's warp has no XLA kernel)."""
    return _random_colour(tf.cast(_random_flips(images, flip_seed), tf.float32), colour_seed, FULL)


def _uniform(seed: tf.Tensor, shape: tf.Tensor, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def _random_flips(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Per-image horizontal and vertical flips, and transposes of square images (all 8 right-angle views)."""
    flip_seed, flop_seed, turn_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
    batch = tf.shape(images)[:1]

    def maybe(
        transform: Callable[[tf.Tensor], tf.Tensor], coin_seed: tf.Tensor, views: tf.Tensor
    ) -> tf.Tensor:
        chosen = _uniform(coin_seed, batch, 0.0, 1.0) < 0.5
        return tf.where(chosen[:, tf.newaxis, tf.newaxis, tf.newaxis], transform(views), views)

    images = maybe(lambda views: tf.reverse(views, axis=[2]), flip_seed, images)
    images = maybe(lambda views: tf.reverse(views, axis=[1]), flop_seed, images)
    if images.shape[1] == images.shape[2]:
        images = maybe(lambda views: tf.transpose(views, [0, 2, 1, 3]), turn_seed, images)
    return images


def _random_geometry(images: tf.Tensor, seed: tf.Tensor, strength: Strength) -> tf.Tensor:
    """One random affine map per image (flips, rotation, zoom about the centre), bilinear, reflected."""
    height, width = images.shape[1], images.shape[2]
    batch = tf.shape(images)[:1]
    flip_seed, flop_seed, angle_seed, turn_seed, zoom_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=5)
    )
    flip_x = tf.sign(_uniform(flip_seed, batch, -1.0, 1.0))
    flip_y = tf.sign(_uniform(flop_seed, batch, -1.0, 1.0))
    turn = strength.rotation_degrees
    angle = _uniform(angle_seed, batch, -turn, turn) * (math.pi / 180)
    if height == width:
        angle += (math.pi / 2) * tf.floor(_uniform(turn_seed, batch, 0.0, 4.0))
    shrink = 1.0 / _uniform(zoom_seed, batch, *strength.zoom)
    cos, sin = tf.cos(angle) * shrink, tf.sin(angle) * shrink
    # Output pixel p samples input R(angle) * diag(flip_x, flip_y) / zoom * (p - centre) + centre.
    a0, a1, b0, b1 = cos * flip_x, -sin * flip_y, sin * flip_x, cos * flip_y
    cx, cy = (width - 1) / 2, (height - 1) / 2
    a2, b2 = cx - a0 * cx - a1 * cy, cy - b0 * cx - b1 * cy
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.constant([height, width], dtype=tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def _hue_saturation_matrices(hue_turn: tf.Tensor, saturation: tf.Tensor) -> tf.Tensor:
    """(B, 3, 3) RGB matrices turning the hue by ``hue_turn`` (fraction of a circle) and scaling saturation.

    Both act on the chroma plane (I, Q) of YIQ: a rotation and a scaling, leaving luma unchanged.
    """
    angle = 2 * math.pi * hue_turn
    cos, sin = tf.cos(angle) * saturation, tf.sin(angle) * saturation
    ones, zeros = tf.ones_like(cos), tf.zeros_like(cos)
    chroma = tf.reshape(tf.stack([ones, zeros, zeros, zeros, cos, -sin, zeros, sin, cos], axis=1), [-1, 3, 3])
    return tf.matmul(tf.matmul(_YIQ_TO_RGB, chroma), _RGB_TO_YIQ)


def _random_colour(images: tf.Tensor, seed: tf.Tensor, strength: Strength) -> tf.Tensor:
    """Per-image hue, saturation, channel gain, contrast (about the channel means) and brightness jitter,
    clipped. All are linear, so they fold into one 3x3 matrix and offset per image: one pass over the pixels.
    """
    hue_seed, saturation_seed, contrast_seed, brightness_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4)
    )
    batch = tf.shape(images)[:1]
    colour = _hue_saturation_matrices(
        _uniform(hue_seed, batch, -strength.hue, strength.hue),
        _uniform(saturation_seed, batch, *strength.saturation),
    )
    if strength.channel_gain:  # its seed is split off the hue's, so modes without it draw as before
        gain, gain_seed = strength.channel_gain, tf.random.experimental.stateless_split(hue_seed, num=1)[0]
        colour *= _uniform(gain_seed, tf.concat([batch, [3]], 0), 1.0 - gain, 1.0 + gain)[:, :, tf.newaxis]
    contrast = _uniform(contrast_seed, batch, *strength.contrast)[:, tf.newaxis]
    brightness = _uniform(brightness_seed, batch, -strength.brightness, strength.brightness)[:, tf.newaxis]
    # contrast * (M x - M mean) + M mean + brightness = (contrast M) x + offset
    recoloured_means = tf.einsum("bc,bdc->bd", tf.reduce_mean(images, axis=[1, 2]), colour)
    offset = (1.0 - contrast) * recoloured_means + brightness
    scaled = colour * contrast[:, :, tf.newaxis]
    images = tf.einsum("bhwc,bdc->bhwd", images, scaled) + offset[:, tf.newaxis, tf.newaxis, :]
    return tf.clip_by_value(images, 0.0, 255.0)


def _soft_copy(images: tf.Tensor) -> tf.Tensor:
    """The images at half resolution, resized back: their fine detail removed."""
    size = tf.shape(images)[1:3]
    return tf.image.resize(tf.image.resize(images, size // 2, method="area"), size, method="bilinear")


def _half_of_them(seed: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
    """A (B, 1, 1, 1) weight per image: 0 for about half of them, uniform in 0..1 for the others."""
    weight = tf.clip_by_value(_uniform(seed, tf.shape(images)[:1], -1.0, 1.0), 0.0, 1.0)
    return weight[:, tf.newaxis, tf.newaxis, tf.newaxis]


def _random_blur(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Blend each image with its soft copy (weight uniform in 0..1, half of the images kept sharp): the
    softer optics or lower resolution of another camera."""
    return images + _half_of_them(seed, images) * (_soft_copy(images) - images)


def _random_sharpening(images: tf.Tensor, seed: tf.Tensor, amount: float) -> tf.Tensor:
    """Unsharp-mask about half of the images, image + a * (image - soft copy) with ``a`` uniform in
    0..``amount``, clipped: the sharper optics of another camera."""
    sharpened = images + amount * _half_of_them(seed, images) * (images - _soft_copy(images))
    return tf.clip_by_value(sharpened, 0.0, 255.0)


def mixup(
    images: tf.Tensor, targets: tf.Tensor, seed: tf.Tensor, alpha: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Blend each image of a batch with a random partner of the same batch, and its target alike (mixup,
    Zhang et al. 2018): a smoother decision boundary that relies less on any one image's pixels.

    The weight per image is ``max(w, 1 - w)`` with ``w ~ Beta(alpha, alpha)``, so each image and its own
    target stay dominant: a soft target's most probable class is still the image's label, which class
    weights and the training metric follow. ``targets`` are float (B, K) class probabilities or (B,) 0/1.
    """
    partner_seed, weight_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    batch = tf.shape(images)[:1]
    partners = tf.random.experimental.stateless_shuffle(tf.range(batch[0]), seed=partner_seed)
    first, second = tf.unstack(tf.random.experimental.stateless_split(weight_seed, num=2))
    draw_a = tf.random.stateless_gamma(batch, seed=first, alpha=alpha)
    draw_b = tf.random.stateless_gamma(batch, seed=second, alpha=alpha)
    weight = draw_a / tf.maximum(draw_a + draw_b, 1e-12)
    weight = tf.maximum(weight, 1.0 - weight)

    def blend(values: tf.Tensor) -> tf.Tensor:
        shaped = tf.reshape(weight, [-1] + [1] * (len(values.shape) - 1))
        return shaped * values + (1.0 - shaped) * tf.gather(values, partners)

    return blend(images), blend(targets)
