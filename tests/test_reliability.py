"""Nothing is lost on a crash: kill -9 and resume, NaN stops, unwritable run dirs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import namedtuple

import numpy as np
import pytest
from conftest import REPO
from test_training import FAST, config

from moss_tf.errors import MossError
from moss_tf.train import checkpoints as ckpt
from moss_tf.train.stage import TrainingError, run_stage


def train_command(run_dir, *overrides):
    command = [sys.executable, str(REPO / "train.py"), "--stage", "pretrain"]
    command += ["--run-dir", str(run_dir)]
    for override in [*FAST, *overrides]:
        command += ["--set", override]
    return command


@pytest.mark.slow
@pytest.mark.parametrize("load", ["memory", "stream"])  # data.load: decoded once, or per crop
def test_kill_9_then_resume_loses_at_most_one_checkpoint_interval(tmp_path, load):
    run = tmp_path / "run"
    last = run / "pretrain" / "checkpoints" / "last.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # Checkpoints only: validating every 2 steps would take most of the time.
    every = ["train.checkpoint_every=3", "train.validate_every=100000", "train.image_every=0"]
    process = subprocess.Popen(
        train_command(run, "train.steps=100000", *every, f"data.load={load}"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline and not (last.is_file() and ckpt.read_meta(last)["step"] >= 6):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert last.is_file(), "no checkpoint within 240 s"
        os.kill(process.pid, signal.SIGKILL)  # mid-run, maybe mid-write
    finally:
        process.kill()
        process.wait()
    # Whatever the moment of the kill, the last checkpoint is whole.
    killed_at = ckpt.read_meta(last)["step"]
    assert killed_at >= 6 and killed_at % 3 == 0

    resumed = subprocess.run(
        [
            *train_command(run, f"train.steps={killed_at + 2}", *every, f"data.load={load}"),
            "--resume",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {killed_at}" in resumed.stdout
    assert ckpt.read_meta(last)["step"] == killed_at + 2


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"loss became nan at step \d+") as err:
        run_stage(
            config("train.steps=50", "train.checkpoint_every=1", "train.learning_rate=1e38"),
            "pretrain",
            run,
            verbose=False,
        )
    assert "Last good checkpoint kept" in str(err.value)
    last = run / "pretrain" / "checkpoints" / "last.npz"
    meta = ckpt.read_meta(last)
    failed_at = int(str(err.value).split("at step ")[1].split(";")[0])
    assert meta["step"] == failed_at - 1
    with np.load(last) as archive:
        assert all(np.isfinite(archive[k]).all() for k in archive.files if k.startswith("v"))


def test_an_unwritable_run_directory_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(MossError, match="not writable"):
        run_stage(config("train.steps=2"), "pretrain", blocker / "run", verbose=False)


def test_a_full_disk_fails_before_training(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 10**6))
    with pytest.raises(MossError, match="MiB free"):
        run_stage(config("train.steps=2"), "pretrain", tmp_path / "run", verbose=False)
    assert not list((tmp_path / "run").rglob("*.npz"))


def test_a_damaged_checkpoint_is_named_not_a_stack_trace(tmp_path):
    run = tmp_path / "run"
    run_stage(config("train.steps=2"), "pretrain", run, verbose=False)
    last = run / "pretrain" / "checkpoints" / "last.npz"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a crash of the disk
    with pytest.raises(ckpt.CheckpointError, match=r"last\.npz"):
        run_stage(config("train.steps=4"), "pretrain", run, resume=True, verbose=False)


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")

    def failing(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(ckpt.CheckpointError, match=r"state\.bin: cannot write \(disk full\)"):
        ckpt.atomic_write(path, failing)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_bad_serving_requests_are_refused_clearly(tmp_path):
    import tensorflow as tf
    from conftest import TINY_MODEL

    from moss_tf.export.saved_model import export_saved_model
    from moss_tf.nn.network import MOSSNet

    net = MOSSNet(**TINY_MODEL)
    net.build()
    served = tf.saved_model.load(str(export_saved_model(net, tmp_path / "moss", warmup=False)))
    images = served.signatures["serving_default"]
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match="float"):
        images(images=tf.zeros((1, 16, 16, 3), tf.int32))
    for shape in [(16, 16, 3), (1, 16, 16, 4)]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"not compatible.*\[\?,\?,\?,3\]"):
            images(images=tf.zeros(shape, tf.float32))
    encoded = served.signatures["derain_bytes"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a PNG, JPEG or BMP file"):
        encoded(image_bytes=tf.constant([b"this is not an image"]))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    last = run / "pretrain" / "checkpoints" / "last.npz"
    process = subprocess.Popen(
        train_command(run, "train.steps=100000", "train.checkpoint_every=1000"),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until training runs (the first log line), then ask it to stop.
        deadline = time.time() + 240
        line = ""
        while time.time() < deadline and "[pretrain step" not in line:
            line = process.stdout.readline()
            assert line or process.poll() is None, process.stderr.read()[-2000:]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1
    assert "SIGTERM received at step" in err and "--resume" in err
    step = ckpt.read_meta(last)["step"]
    assert 1 <= step < 1000  # saved at the signal, not at a checkpoint interval
