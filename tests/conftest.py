"""Test set-up shared by every test file.

TensorFlow is told, before it starts, to split the CPU into two logical
devices, so the multi-replica tests (MirroredStrategy over 2 devices) run on
this 2-core machine; single-device code is unaffected.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import moss_tf  # noqa: F401  (first: it sets TensorFlow's CPU options before TensorFlow starts)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# A network small enough for tests that take seconds.
TINY_MODEL = {
    "base_channels": 4,
    "channel_step": 4,
    "num_stages": 3,
    "num_resampling_stages": 2,
    "blocks_per_stage": 1,
    "memory_items": 8,
}


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the repository; tests that need it skip without it."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the development data and fixtures live there)")
    return SHARED


@pytest.fixture(scope="session")
def two_replicas() -> tf.distribute.MirroredStrategy:
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Several strategies in one process can reuse collective instance keys and
    trip over each other's cached collective parameters, so tests share one.
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "the CPU is split into two logical devices above"
    return tf.distribute.MirroredStrategy(devices)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
