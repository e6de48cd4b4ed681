"""Test set-up shared by every test file.

TensorFlow is told, before it starts, to split the CPU into two logical
devices, so the multi-replica tests (MirroredStrategy over 2 devices) run on
this 2-core machine; single-device code is unaffected.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
