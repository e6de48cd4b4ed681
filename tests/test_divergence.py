"""Divergence without NaN is caught: the guard's rules, and a run it stops (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_training import config

from moss_tf.nn.losses import feature_scale_penalty
from moss_tf.nn.network import MOSSNet
from moss_tf.train import checkpoints as ckpt
from moss_tf.train.callbacks import Checkpointing
from moss_tf.train.divergence import DivergenceGuard, scale_signals
from moss_tf.train.stage import TrainingError, run_stage


def feed(guard, losses, start=1):
    for step, loss in enumerate(losses, start):
        reason = guard.check_loss(step, loss)
        if reason:
            return step, reason
    return None, None


def test_a_lasting_loss_jump_is_divergence_and_a_single_spike_is_not():
    guard = DivergenceGuard(loss_factor=3.0, patience=5, warmup=10)
    assert feed(guard, [0.1] * 20) == (None, None)
    assert feed(guard, [1.0] * 4 + [0.1] * 10, start=21) == (None, None)  # spikes, recovered
    step, reason = feed(guard, [1.0] * 10, start=35)
    assert step == 39 and "above 3x its running level" in reason


def test_the_loss_check_waits_for_the_warmup_and_can_be_turned_off():
    assert feed(DivergenceGuard(patience=2, warmup=10), [1.0, 10.0, 10.0]) == (None, None)
    off = DivergenceGuard(loss_factor=0, patience=1, warmup=0)
    assert feed(off, [0.1] * 5 + [100.0] * 5) == (None, None)


class RecordingState:
    """A stage state that records the steps it is saved at."""

    def __init__(self, guard):
        self.guard = guard
        self.paths = type("Paths", (), {"last": "last.npz"})()
        self.saved = []

    def save(self, path, step):
        self.saved.append(step)


def test_a_checkpoint_due_during_a_loss_jump_is_written_when_the_jump_ends():
    guard = DivergenceGuard(loss_factor=3.0, patience=50, warmup=5)
    state = RecordingState(guard)
    checkpointing = Checkpointing(0, 100, every=10, state=state)
    losses = [0.1] * 19 + [1.0] * 3 + [0.1] * 18  # a jump over the step-20 checkpoint
    for step, loss in enumerate(losses, 1):
        guard.check_loss(step, loss)
        checkpointing.on_train_batch_end(step - 1)
    assert state.saved == [10, 23, 30, 40]


def test_exploded_or_infinite_scales_are_divergence():
    guard = DivergenceGuard(scale_limit=1e6)
    assert guard.check_scales({"memory_item_norm": 50.0}) is None
    assert "memory_item_norm reached 2e+12" in guard.check_scales({"memory_item_norm": 2e12})
    assert guard.check_scales({"bn_moving_variance_max": float("inf")})
    assert DivergenceGuard(scale_limit=0).check_scales({"memory_item_norm": 1e30}) is None


def test_the_guard_state_survives_a_checkpoint_round_trip():
    guard = DivergenceGuard(patience=3, warmup=0)
    feed(guard, [0.2] * 5 + [5.0])
    resumed = DivergenceGuard(patience=3, warmup=0)
    resumed.restore(guard.state())
    assert resumed.state() == guard.state() and resumed.suspicious


def test_scale_signals_read_the_memory_and_batch_norm_statistics():
    net = MOSSNet(base_channels=8, channel_step=8, blocks_per_stage=1, memory_items=16)
    net.build()
    net.memory.items.assign(3.0 * tf.ones_like(net.memory.items))
    net.fusions[1].moving_variance.assign(7.0 * tf.ones_like(net.fusions[1].moving_variance))
    signals = scale_signals(net)
    channels = net.memory.items.shape[-1]
    assert signals["memory_item_norm"] == pytest.approx(3.0 * np.sqrt(channels))
    assert signals["bn_moving_variance_max"] == pytest.approx(7.0)


def test_scale_signals_of_a_network_without_memory_have_no_memory_signal():
    net = MOSSNet(base_channels=8, channel_step=8, blocks_per_stage=1, use_memory=False)
    net.build()
    net.fusions[0].moving_variance.assign(2.0 * tf.ones_like(net.fusions[0].moving_variance))
    assert scale_signals(net) == {"bn_moving_variance_max": pytest.approx(2.0)}


def test_the_feature_scale_penalty_is_zero_under_the_limit_and_grows_past_it():
    small = [tf.fill((2, 4, 4, 3), 5.0)]
    assert float(feature_scale_penalty(small, 10.0)) == 0.0
    large = [tf.concat([tf.fill((1, 4, 4, 3), 5.0), tf.fill((1, 4, 4, 3), 100.0)], 0)]
    # Per image: 0 and log(100/10)^2, averaged.
    assert float(feature_scale_penalty(large, 10.0)) == pytest.approx(np.log(10.0) ** 2 / 2)


@pytest.mark.parametrize(
    ("scale_limit", "signal"),
    [("1e6", "reached"), ("0", "the loss stayed above")],
    ids=["scale-check", "loss-check"],
)
def test_a_run_that_diverges_without_nan_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, scale_limit, signal
):
    run = tmp_path / "run"
    healthy = ("train.checkpoint_every=10", "train.validate_every=100", "train.image_every=0")
    run_stage(config("train.steps=60", *healthy), "pretrain", run, verbose=False)
    last = run / "pretrain" / "checkpoints" / "last.npz"
    assert ckpt.read_meta(last)["step"] == 60

    # Resumed with an injected learning rate of 1.0 (a resumed run takes the
    # configured rate): scales explode and the loss jumps, every value finite.
    jump = ("train.learning_rate=1.0", "train.divergence_patience=5", "train.steps=200")
    overrides = (*healthy, *jump, f"train.divergence_scale_limit={scale_limit}")
    with pytest.raises(TrainingError, match=r"diverged at step \d+: ") as err:
        run_stage(config(*overrides), "pretrain", run, resume=True, verbose=False)
    message = str(err.value)
    assert signal in message and "nan" not in message.lower()
    assert f"Last checkpoint kept: {last}" in message
    stopped_at = int(message.split("diverged at step ")[1].split(":")[0])
    assert 60 < stopped_at < 200
    assert ckpt.read_meta(last)["step"] == 60, "the checkpoint from before the jump is kept"
    with np.load(last) as archive:
        assert all(np.isfinite(archive[k]).all() for k in archive.files if k.startswith("v"))
