"""Loss terms of MOSS (docs/method.md §2). Images are float32 NHWC in [-1, 1]."""

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


def feature_scale_penalty(features, limit):
    """Hinge on the scale of encoder features: zero while every scale is under ``limit``.

    For each feature map ``f`` [B, H, W, C] and each image b, ``r = RMS(f_b)``;
    the penalty is the mean over maps and images of ``max(0, log(r / limit))^2``.
    Per-image terms keep it exact under data parallelism (a mean of per-sample
    values), and the log makes it indifferent to how far past the limit the
    scale has gone in absolute units.
    """
    terms = []
    for f in features:
        f = tf.cast(f, tf.float32)
        rms = tf.sqrt(tf.reduce_mean(tf.square(f), axis=[1, 2, 3]) + 1e-12)
        terms.append(tf.reduce_mean(tf.square(tf.nn.relu(tf.math.log(rms / limit)))))
    return tf.add_n(terms) / len(terms)
