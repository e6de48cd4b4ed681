"""Two training processes on loopback form a MultiWorkerMirroredStrategy cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, TINY_MODEL

from moss_tf.checkpoints import load_network


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
