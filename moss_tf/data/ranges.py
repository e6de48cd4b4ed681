"""The one place where image values change range at the model boundary.

The network reads and writes images in [-1, 1] (docs/method.md §1: ``x / 127.5 - 1``
for uint8 ``x``). Files and metrics use uint8 [0, 255] or float [0, 1].
Import these helpers instead of re-writing the arithmetic.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["from_model_range", "to_model_range"]


def to_model_range(images) -> tf.Tensor:
    """Map images to the model range [-1, 1], float32.

    Args:
        images: uint8 values in [0, 255] (converted as ``x / 127.5 - 1``), or
            floating-point values in [0, 1] (converted as ``2 x - 1``). The
            dtype decides which: integers are read as [0, 255], floats as [0, 1].

    Returns:
        float32 tensor of the same shape, in [-1, 1].

    Example::

        x = to_model_range(read_image("rainy.png")[None])  # [1, H, W, 3] in [-1, 1]
    """
    images = tf.convert_to_tensor(images)
    if images.dtype.is_integer:
        return tf.cast(images, tf.float32) / 127.5 - 1.0
    return tf.cast(images, tf.float32) * 2.0 - 1.0


def from_model_range(images) -> tf.Tensor:
    """Map model outputs in [-1, 1] to float32 [0, 1], clipped.

    Multiply by 255 for uint8 files; how to round (truncate as the released
    code does, or round) is the metric's choice, see docs/method.md §4.
    """
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    return tf.clip_by_value((images + 1.0) * 0.5, 0.0, 1.0)
