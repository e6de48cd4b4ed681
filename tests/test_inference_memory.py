"""The memory at inference: each image's own update (default), the released per-batch one, frozen.

Random networks move their outputs by ~1e-7 through the memory update (the
official fixtures differ by 2e-7 between batch and single), too little to
tell the modes apart. These tests use memory_decay 0.5, where the update moves
outputs by ~1e-2, as it does by grey levels on a trained network.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import TINY_MODEL

from moss_tf.config import ConfigError, config_from_dict, save_config
from moss_tf.infer.derain import Derainer, owned_ranges, tile_starts
from moss_tf.nn.layers import MemoryBank
from moss_tf.nn.network import MOSSNet
from moss_tf.train.checkpoints import load_network
from moss_tf.train.trainer import MOSSTrainer

STRONG_UPDATE = {**TINY_MODEL, "memory_decay": 0.5}


@pytest.fixture(scope="module")
def net():
    keras.utils.set_random_seed(5)
    model = MOSSNet(**STRONG_UPDATE)
    model.build()
    # The CBN fusions start at zero, which cuts the decoder off from the
    # memory read: give them values, as training does.
    rng = np.random.default_rng(5)
    for variable in model.weights:
        if "fuse" in variable.path and "alpha" not in variable.path:
            low, high = (0.5, 1.5) if "variance" in variable.path else (-0.2, 0.2)
            variable.assign(rng.uniform(low, high, variable.shape))
    return model


def images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def _normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _update_and_read(vectors, items, decay):
    """Eq. (3) from ``vectors`` [N, C] then Eq. (5) for them, float64 NumPy."""
    choice = np.argmax(_normalize(vectors) @ _normalize(items).T, axis=1)
    means = np.stack(
        [vectors[choice == k].sum(0) / ((choice == k).sum() + 1e-6) for k in range(len(items))]
    )
    updated = decay * items + (1 - decay) * means
    scores = _normalize(vectors) @ _normalize(updated).T
    weights = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    return weights @ updated


@pytest.mark.parametrize("mode", ["per_image", "batch", "frozen"])
def test_each_mode_reads_the_memory_eq3_gives_it(mode):
    memory = MemoryBank(num_items=6, decay=0.5, inference_memory=mode)
    z = np.random.default_rng(1).normal(size=(3, 4, 5, 7)).astype("float32")
    memory.build(z.shape)
    items = memory.items.numpy().astype(np.float64)
    read = memory(z, training=False).numpy()
    z64 = z.astype(np.float64)
    if mode == "per_image":
        expected = np.stack([_update_and_read(image.reshape(-1, 7), items, 0.5) for image in z64])
    elif mode == "batch":
        expected = _update_and_read(z64.reshape(-1, 7), items, 0.5)
    else:
        expected = _update_and_read(z64.reshape(-1, 7), items, 1.0)
    np.testing.assert_allclose(read.reshape(expected.shape), expected, atol=1e-5)
    np.testing.assert_array_equal(memory.items.numpy(), items.astype("float32"))  # not stored


def test_an_image_gets_the_same_output_alone_and_inside_any_batch(net):
    photo, others = images((1, 24, 20, 3)), images((3, 24, 20, 3), seed=1)
    alone = net(photo, training=False).numpy()[0]
    first = net(np.concatenate([photo, others]), training=False).numpy()[0]
    last = net(np.concatenate([others, photo]), training=False).numpy()[-1]
    np.testing.assert_allclose(first, alone, atol=1e-6)
    np.testing.assert_allclose(last, alone, atol=1e-6)
    # The released per-batch update lets the other images move it; the modes agree alone.
    released = net.with_inference_memory("batch")
    np.testing.assert_allclose(released(photo, training=False).numpy()[0], alone, atol=1e-6)
    mixed = released(np.concatenate([photo, others]), training=False).numpy()[0]
    assert np.abs(mixed - alone).max() > 1e-3


def test_frozen_reads_the_stored_memory_and_differs_from_the_update(net):
    frozen = net.with_inference_memory("frozen")
    x = images((2, 24, 20, 3), seed=2)
    stored = net.memory.items.numpy()[None]
    np.testing.assert_allclose(
        frozen(x, training=False).numpy(), net.call_with_memory(x, stored).numpy(), atol=1e-6
    )
    assert np.abs(frozen(x, training=False).numpy() - net(x, training=False).numpy()).max() > 1e-3


def test_training_keeps_the_whole_batch_update_in_every_mode():
    z = np.random.default_rng(3).normal(size=(2, 3, 4, 5)).astype("float32")
    outputs, stored = [], []
    for mode in ("per_image", "batch", "frozen"):
        keras.utils.set_random_seed(7)
        memory = MemoryBank(num_items=6, decay=0.5, inference_memory=mode)
        outputs.append(memory(z, training=True).numpy())
        stored.append(memory.items.numpy())
    keras.utils.set_random_seed(7)
    released = MemoryBank(num_items=6, decay=0.5, inference_memory="batch")
    np.testing.assert_allclose(outputs[0], released(z, training=False).numpy(), atol=1e-6)
    for output, items in zip(outputs[1:], stored[1:], strict=True):
        np.testing.assert_array_equal(output, outputs[0])
        np.testing.assert_array_equal(items, stored[0])


def test_the_semi_target_makes_pseudo_labels_with_the_per_batch_update(net):
    target = MOSSTrainer.copy_target(net)
    assert net.inference_memory == "per_image" and target.inference_memory == "batch"
    unlabeled = images((3, 24, 20, 3), seed=4)
    np.testing.assert_allclose(
        target(unlabeled, training=False).numpy(),
        net.with_inference_memory("batch")(unlabeled, training=False).numpy(),
        atol=1e-6,
    )


def test_the_mode_survives_config_keras_file_and_weights_with_config_yaml(net, tmp_path):
    frozen = net.with_inference_memory("frozen")
    assert MOSSNet.from_config(frozen.get_config()).memory.inference_memory == "frozen"
    frozen.save(tmp_path / "frozen.keras")
    loaded = keras.saving.load_model(tmp_path / "frozen.keras")
    assert loaded.inference_memory == loaded.memory.inference_memory == "frozen"

    cfg = config_from_dict({"model": {**STRONG_UPDATE, "inference_memory": "frozen"}})
    (tmp_path / "run").mkdir()
    save_config(cfg, tmp_path / "run" / "config.yaml")
    frozen.save_weights(tmp_path / "run" / "model.weights.h5")
    reloaded, _ = load_network(run_dir=tmp_path / "run")
    assert reloaded.memory.inference_memory == "frozen"
    x = images((1, 24, 20, 3), seed=5)
    np.testing.assert_array_equal(reloaded(x).numpy(), frozen(x).numpy())


def test_an_unknown_mode_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.inference_memory.*per_image, batch, frozen"):
        config_from_dict({"model": {"inference_memory": "per_photo"}})
    with pytest.raises(ValueError, match="per_photo"):
        MemoryBank(inference_memory="per_photo")


# ------------------------------------------------------------------------------ tiling


def test_tiles_own_every_feature_cell_once_away_from_their_borders():
    for length, tile, overlap in [(392, 128, 32), (2048, 512, 64), (1536, 512, 64)]:
        starts = tile_starts(length, tile, overlap, multiple=8)
        assert all(s % 8 == 0 for s in starts) and starts[-1] + tile == length
        covered = np.zeros(length, int)
        for start, (begin, end) in zip(starts, owned_ranges(starts, tile, length, 8), strict=True):
            assert begin % 8 == 0 and end % 8 == 0
            covered[start + begin : start + end] += 1
            # Half the overlap from a border with a neighbour (less rounding to cells).
            margin = overlap // 2 - 4
            assert start == 0 or begin >= margin
            assert start + tile == length or tile - end >= margin
        np.testing.assert_array_equal(covered, 1)


def test_a_tiled_photo_gets_the_whole_photos_memory_update(net):
    # Sides that are not multiples of 4 (the network's size multiple): the
    # tiler pads the photo as the network pads the whole.
    height, width = 201, 150
    yy, xx = np.mgrid[:height, :width]
    rainy = np.clip(
        0.6 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 11.0)[..., None]
        + images((height, width, 3), seed=6) * 0.2,
        -1,
        1,
    ).astype("float32")
    whole = Derainer(net, tile_size=256).derain_model_range(rainy)
    tiled = Derainer(net, tile_size=96, overlap=40).derain_model_range(rainy)
    error = np.abs(tiled - whole)
    assert error.mean() < 2e-4 and error.max() < 5e-3  # what is left: tile borders' context
    # Inside a tile, away from its borders, it is the whole photo's result...
    interior = (slice(0, 56), slice(0, 56))
    assert error[interior].max() < 1e-5
    # ... which the tile's own update (the one-pass tiling of before) is not.
    corner = net(rainy[None, :96, :96], training=False).numpy()[0]
    assert np.abs(corner[interior] - whole[interior]).max() > 1e-4
