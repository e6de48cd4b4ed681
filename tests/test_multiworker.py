"""Multi-worker training: each worker's rows of the global batches; two processes on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, TINY_MODEL
from test_data_stream import _data, _pairs

from moss_tf.data import build_training_data
from moss_tf.train.checkpoints import load_network
from moss_tf.train.stage import stage_batches, worker_batches


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_slices(data, worker: int, batches: int) -> list[np.ndarray]:
    """Worker ``worker`` of 2 (one replica each): its first per-replica batches, pairs joined."""
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
    )
    dataset = worker_batches(lambda rows: stage_batches(data, rows), context, global_batch=4)
    return [_flat(element) for element in dataset.take(batches)]


def _flat(element) -> np.ndarray:
    """((rainy, clean), unlabeled) as one array, images joined on channels."""
    return np.concatenate([np.asarray(t) for t in tf.nest.flatten(element)], -1)


def test_each_worker_makes_exactly_its_rows_of_the_global_batches(tmp_path):
    pairs = _pairs(tmp_path / "set", 6, rainy_ext="jpg")
    cfg = _data(labeled={"pairs": str(pairs), "fraction": 0.5}, load="stream")

    def build(start_step):
        return build_training_data(
            cfg, batch_size=4, crop_size=16, seed=5, with_unlabeled=True, start_step=start_step
        )

    data = build(0)
    whole = [_flat(batch) for batch in stage_batches(data).take(3)]
    for worker in (0, 1):
        rows = slice(2 * worker, 2 * worker + 2)
        for step, got in enumerate(_worker_slices(data, worker, 3)):
            np.testing.assert_array_equal(got, whole[step][rows], err_msg=f"{worker=} {step=}")
    # --resume: a worker's stream restarts at the step, with the same rows.
    (resumed,) = _worker_slices(build(2), 1, 1)
    np.testing.assert_array_equal(resumed, whole[2][2:4])


@pytest.mark.slow
def test_two_worker_processes_train_in_lockstep(tmp_path):
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    overrides = [f"model.{k}={v}" for k, v in TINY_MODEL.items()] + [
        "train.steps=3",
        "train.batch_size=4",
        "train.crop_size=32",
        "train.validate_every=3",
        "train.checkpoint_every=3",
        "train.image_every=0",
    ]
    command = [sys.executable, str(REPO / "train.py"), "--stage", "pretrain"]
    command += ["--run-dir", str(tmp_path / "run")]
    for override in overrides:
        command += ["--set", override]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        processes.append(
            subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    outputs = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail("the two-worker run did not finish in 300 s")
        outputs.append(out.decode(errors="replace"))
        assert process.returncode == 0, out.decode(errors="replace")[-3000:]

    assert "on 2 replica(s)" in outputs[0]  # the chief reports the cluster
    chief, _ = load_network(checkpoint=tmp_path / "run" / "pretrain" / "final.weights.h5")
    other, _ = load_network(
        checkpoint=tmp_path / "run" / "workers" / "worker-1" / "pretrain" / "final.weights.h5",
        config_path=tmp_path / "run" / "config.yaml",
    )
    for a, b in zip(chief.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
