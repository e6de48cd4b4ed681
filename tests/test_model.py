"""The network: shapes, parameter counts, memory semantics, serialization."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_MODEL

from moss_tf.nn.layers import CBNFusion, MemoryBank, ResidualBlock
from moss_tf.nn.network import MOSSNet


def tiny_net(**overrides):
    net = MOSSNet(**{**TINY_MODEL, **overrides})
    net.build()
    return net


def images(rng, shape):
    return rng.uniform(-1, 1, shape).astype("float32")


def test_default_network_has_the_released_parameter_counts():
    net = MOSSNet()
    net.build()
    trainable = sum(int(np.prod(w.shape)) for w in net.trainable_weights)
    memory = int(np.prod(net.memory.items.shape))
    bn_statistics = sum(
        int(np.prod(w.shape)) for f in net.fusions for w in (f.moving_mean, f.moving_variance)
    )
    assert trainable == 2_806_787
    assert memory == 49_152 and tuple(net.memory.items.shape) == (512, 96)
    assert trainable + memory == 2_855_939
    assert net.count_params() == 2_855_939 + bn_statistics
    assert not net.memory.items.trainable


@pytest.mark.parametrize("shape", [(1, 37, 53, 3), (2, 8, 8, 3), (3, 20, 64, 3), (1, 9, 9, 3)])
def test_any_image_size_comes_back_at_its_own_size_in_range(rng, shape):
    net = tiny_net()
    y = net(images(rng, shape)).numpy()
    assert y.shape == shape
    assert np.all(np.abs(y) <= 1.0)


def test_odd_sizes_are_reflect_padded_then_cropped(rng):
    net = tiny_net(memory_decay=1.0)  # a frozen memory keeps both calls comparable
    x = images(rng, (1, 13, 22, 3))
    padded = np.pad(x, [(0, 0), (0, 3), (0, 2), (0, 0)], mode="reflect")
    np.testing.assert_allclose(net(x).numpy(), net(padded).numpy()[:, :13, :22], atol=1e-6)


def test_memory_is_stored_in_training_only(rng):
    net = tiny_net()
    x = images(rng, (2, 16, 16, 3))
    before = net.memory.items.numpy().copy()
    net(x, training=False)
    np.testing.assert_array_equal(net.memory.items.numpy(), before)
    net(x, training=True)
    assert np.abs(net.memory.items.numpy() - before).max() > 1e-6


def _eq3_reference(z, items, decay):
    """Eq. (3) in float64 NumPy."""
    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    mn = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    choice = np.argmax(zn @ mn.T, axis=1)
    means = np.zeros_like(items)
    for k in range(items.shape[0]):
        chosen = z[choice == k]
        means[k] = chosen.sum(axis=0) / (len(chosen) + 1e-6)
    return decay * items + (1 - decay) * means


@pytest.mark.parametrize("decay", [0.0, 0.9, 0.999, 1.0])
def test_memory_update_matches_eq3(rng, decay):
    memory = MemoryBank(num_items=6, decay=decay)
    z = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    memory.build(z.shape)
    items = memory.items.numpy().astype(np.float64)
    memory(z, training=True)
    expected = _eq3_reference(z.reshape(-1, 5).astype(np.float64), items, decay)
    np.testing.assert_allclose(memory.items.numpy(), expected, atol=1e-5)
    if decay == 1.0:
        np.testing.assert_array_equal(memory.items.numpy(), items.astype("float32"))


def test_memory_read_is_a_softmax_mixture_with_gradient_through_scores_only(rng):
    memory = MemoryBank(num_items=4, decay=1.0)
    z = tf.constant(rng.normal(size=(1, 2, 2, 3)).astype("float32"))
    memory.build(z.shape)
    items = memory.items.numpy()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        read = memory(z)
    vectors = z.numpy().reshape(-1, 3)
    scores = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (
        items / np.linalg.norm(items, axis=1, keepdims=True)
    ).T
    weights = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(read.numpy().reshape(-1, 3), weights @ items, atol=1e-5)
    assert np.abs(tape.gradient(read, z).numpy()).max() > 0
    assert tape.gradient(read, memory.items) is None


def test_without_memory_the_encoding_goes_straight_to_the_decoder(rng):
    net = tiny_net(use_memory=False)
    assert not net.memory.built  # no memory weights at all
    x = images(rng, (1, 16, 16, 3))
    np.testing.assert_allclose(net(x).numpy(), net(x).numpy())


def test_skip_switch_changes_the_output(rng):
    with_skip, without_skip = tiny_net(), tiny_net(use_skip=False)
    without_skip.set_weights(with_skip.get_weights())
    x = images(rng, (1, 16, 16, 3))
    assert np.abs(with_skip(x).numpy() - without_skip(x).numpy()).max() > 1e-4


def test_cbn_uses_batch_statistics_in_training_and_moving_ones_at_inference(rng):
    fuse = CBNFusion(4, gate_keep_probability=1.0)
    f = rng.normal(3.0, 2.0, size=(4, 5, 5, 4)).astype("float32")
    g = rng.normal(size=(4, 5, 5, 6)).astype("float32")
    fuse(f, g, training=True)
    flat = f.reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(fuse.moving_mean.numpy(), 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(
        fuse.moving_variance.numpy(), 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5
    )
    # At initialisation every modulation is zero: the output is the normalized input.
    out = fuse(f, g, training=True).numpy()
    normalized = (f - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5)
    np.testing.assert_allclose(out, normalized, atol=1e-4)
    stats = fuse.moving_mean.numpy().copy()
    fuse(f, g, training=False)
    np.testing.assert_array_equal(fuse.moving_mean.numpy(), stats)


def test_cbn_gate_is_dropped_per_sample_in_training_only(rng):
    fuse = CBNFusion(3, gate_keep_probability=0.5, seed=1)
    f = rng.normal(size=(64, 2, 2, 3)).astype("float32")
    g = rng.normal(size=(64, 2, 2, 3)).astype("float32")
    fuse.build(f.shape, g.shape)
    fuse.alpha.kernel.assign(np.zeros((1, 1, 3, 1)))  # alpha = sigmoid(0) = 0.5
    fuse.affine_beta.assign([5.0, 5.0, 5.0])  # out1 = out0 + 5: the gate shows
    out = fuse(f, g, training=True).numpy()
    dropped = out.mean(axis=(1, 2, 3)) < 1.25  # alpha masked to 0: out = out0, mean ~0
    assert 10 < dropped.sum() < 54
    inference = fuse(f, g, training=False).numpy()
    assert np.all(inference.mean(axis=(1, 2, 3)) > 1.25)  # never masked: mean ~2.5


def _assert_round_trip(layer, *inputs):
    layer(*inputs)
    clone = layer.__class__.from_config(layer.get_config())
    clone(*inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(*inputs).numpy(), layer(*inputs).numpy(), atol=1e-6)
    assert clone.get_config() == layer.get_config()


def test_layer_configs_round_trip(rng):
    x = images(rng, (1, 8, 8, 4))
    block = ResidualBlock(4, 6, upsample=True)
    assert block(x).shape == (1, 16, 16, 6)
    _assert_round_trip(block, x)
    _assert_round_trip(ResidualBlock(4, 4, downsample=True), x)
    _assert_round_trip(MemoryBank(num_items=5, decay=0.5), x)
    _assert_round_trip(CBNFusion(4, gate_keep_probability=0.7), x, images(rng, (1, 8, 8, 2)))


def test_keras_file_round_trip_gives_identical_outputs(rng, tmp_path):
    net = tiny_net(memory_decay=0.9, use_skip=False)
    x = images(rng, (2, 24, 17, 3))
    path = tmp_path / "moss.keras"
    net.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MOSSNet)
    assert loaded.get_config() == net.get_config()
    np.testing.assert_array_equal(loaded(x).numpy(), net(x).numpy())
    np.testing.assert_array_equal(loaded.memory.items.numpy(), net.memory.items.numpy())


def test_weights_file_round_trip(rng, tmp_path):
    net = tiny_net()
    net(images(rng, (2, 16, 16, 3)), training=True)  # non-trivial BN statistics and memory
    path = tmp_path / "moss.weights.h5"
    net.save_weights(path)
    other = tiny_net()
    other.load_weights(path)
    x = images(rng, (1, 16, 16, 3))
    np.testing.assert_array_equal(other(x).numpy(), net(x).numpy())
