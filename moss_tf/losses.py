"""Loss terms of MOSS (SPEC.md §2). Images are float32 NHWC in [-1, 1]."""

from __future__ import annotations

import tensorflow as tf


def l1_loss(predicted, target):
    """``mean |predicted - target|`` over every pixel and channel (L_SU, L_UN)."""
    return tf.reduce_mean(tf.abs(tf.cast(predicted, tf.float32) - tf.cast(target, tf.float32)))


def total_variation(images):
    """L_TV: the mean of squared vertical and horizontal differences, averaged.

    ``(mean((y[:, 1:] - y[:, :-1])^2) + mean((y[:, :, 1:] - y[:, :, :-1])^2)) / 2``
    """
    images = tf.cast(images, tf.float32)
    vertical = tf.reduce_mean(tf.square(images[:, 1:] - images[:, :-1]))
    horizontal = tf.reduce_mean(tf.square(images[:, :, 1:] - images[:, :, :-1]))
    return (vertical + horizontal) / 2.0
