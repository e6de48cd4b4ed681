"""Memory and batch-norm statistics under tf.distribute use the global batch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from conftest import TINY_MODEL

from moss_tf.nn.network import MOSSNet


def test_two_replicas_leave_the_same_memory_as_one_replica_with_the_whole_batch(rng, two_replicas):
    x = rng.uniform(-1, 1, (4, 16, 16, 3)).astype("float32")
    single = MOSSNet(**TINY_MODEL)
    single.build()
    initial = single.get_weights()
    single(x, training=True)

    strategy = two_replicas
    with strategy.scope():
        mirrored = MOSSNet(**TINY_MODEL)
        mirrored.build()
    mirrored.set_weights(initial)
    dataset = tf.data.Dataset.from_tensors(x)  # the global batch of 4, 2 per replica
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(images):
        return strategy.run(lambda im: mirrored(im, training=True), args=(images,))

    step(batch)
    assert strategy.num_replicas_in_sync == 2
    items = [v.numpy() for v in strategy.experimental_local_results(mirrored.memory.items.value)]
    np.testing.assert_array_equal(items[0], items[1])  # every replica holds the same memory
    np.testing.assert_allclose(items[0], single.memory.items.numpy(), atol=1e-5)
    assert np.abs(items[0] - initial[_memory_index(single)]).max() > 1e-5  # it was updated
    for one, two in zip(single.fusions, mirrored.fusions, strict=True):
        np.testing.assert_allclose(two.moving_mean.numpy(), one.moving_mean.numpy(), atol=1e-5)
        np.testing.assert_allclose(
            two.moving_variance.numpy(), one.moving_variance.numpy(), atol=1e-5
        )


def _memory_index(net):
    return next(i for i, w in enumerate(net.weights) if w is net.memory.items)
