"""train.recompute: the same gradients and state updates; stage activations recomputed."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_MODEL

from moss_tf.nn import layers
from moss_tf.nn.network import MOSSNet
from moss_tf.train.trainer import MOSSTrainer


def _semi_trainer() -> MOSSTrainer:
    online = MOSSNet(**{**TINY_MODEL, "memory_decay": 0.9}, name="online")
    online.build()
    return MOSSTrainer(online, "semi", target=MOSSTrainer.copy_target(online), seed=1)


def _batch(rng):
    def images():
        return tf.constant(rng.uniform(-1, 1, (2, 16, 16, 3)), tf.float32)

    return (images(), images()), images()


def _step(trainer, data, recompute, compiled=True):
    """(loss, gradients, memory and batch-norm statistics after the step) of one semi step."""
    trainer.online.recompute = recompute

    def step():
        with tf.GradientTape() as tape:
            losses, _ = trainer.compute_losses(data, training=True)
        variables = trainer.online.trainable_variables
        return losses["loss"], tape.gradient(losses["loss"], variables)

    loss, gradients = (tf.function(step) if compiled else step)()
    state = [v.numpy() for v in trainer.online.non_trainable_variables]
    return loss.numpy(), [g.numpy() for g in gradients], state


def test_recompute_gives_the_plain_steps_gradients_memory_and_batch_norm_statistics(rng):
    trainer = _semi_trainer()
    data = _batch(rng)
    start = [v.numpy() for v in trainer.variables]  # weights, state and random seeds
    plain = _step(trainer, data, recompute=False)
    for variable, value in zip(trainer.variables, start, strict=True):
        variable.assign(value)
    recomputed = _step(trainer, data, recompute=True)

    assert plain[0] == pytest.approx(recomputed[0], abs=1e-6)
    for a, b in zip(plain[1], recomputed[1], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Memory items and moving statistics moved once, as in the plain step
    # (memory_decay 0.9: a second update would move them by ~10% more).
    assert any(not np.array_equal(a, b) for a, b in zip(start, plain[2], strict=False))
    for a, b in zip(plain[2], recomputed[2], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_recompute_runs_the_residual_blocks_again_and_the_memory_once(rng, monkeypatch):
    calls = {"blocks": 0, "memory": 0}

    def counting(cls, key):
        original = cls.call

        @functools.wraps(original)  # Keras reads the signature of call
        def call(self, *args, **kwargs):
            calls[key] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "call", call)

    counting(layers.ResidualBlock, "blocks")
    counting(layers.MemoryBank, "memory")
    trainer, data = _semi_trainer(), _batch(rng)
    counts = []
    for recompute in (False, True):
        calls.update(blocks=0, memory=0)
        _step(trainer, data, recompute, compiled=False)  # eager: each call is counted
        counts.append(dict(calls))
    plain, recomputed = counts
    assert recomputed["memory"] == plain["memory"]
    assert recomputed["blocks"] > plain["blocks"]
