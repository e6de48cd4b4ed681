"""Floating-point operations of a traced TensorFlow graph, counted by TensorFlow's profiler.

The counts come from ``tf.compat.v1.profiler`` over the very graph that is
timed: a ``Conv2D`` counts ``2 * output elements * kernel height * kernel
width * input channels`` (a multiply and an add per MAC), a ``MatMul``
``2 * M * N * K`` (a ``BatchMatMul`` that for each of its batch, counted here
since the profiler does not), element-wise arithmetic one per element, and the backward
convolutions of a training step (``Conv2DBackpropInput``/``Filter``) as much
as the forward one. Ops without a registered count (``ResizeBilinear``,
``LeakyRelu``, ``Sigmoid``, ``Tanh``, copies) add nothing; in MOSSNet they
are under 2 % of the work. Shapes must be static: trace with fixed sizes.

    >>> net = MOSSNet(); net.build()
    >>> per_op = forward_flops(net, 256)     # {"Conv2D": 19408781312, "MatMul": ..., ...}
    >>> sum(per_op.values()) / 1e9           # ~19.8 GFLOP for one 256 x 256 image
"""

from __future__ import annotations

import tensorflow as tf


def graph_flops(graph: tf.Graph) -> dict[str, int]:
    """Floating-point operations of ``graph`` per op type, e.g. ``{"Conv2D": 19408781312}``.

    ``graph`` is a ``tf.Graph`` with fully defined shapes, e.g. the
    ``.graph`` of a concrete function traced with fixed-size inputs. Op types
    that count zero are left out.
    """
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"  # the profiler prints a report otherwise
    # The "op" view groups ops by type; each type is a node of the returned tree.
    root = tf.compat.v1.profiler.profile(graph, options=options, cmd="op")
    counts: dict[str, int] = {}
    pending = list(root.children)
    while pending:
        node = pending.pop()
        if node.float_ops:
            counts[node.name] = counts.get(node.name, 0) + int(node.float_ops)
        pending.extend(node.children)
    # The profiler has no count for batched matrix products (the memory's
    # per-image update and read use them): 2 * batch * M * N * K each.
    for op in graph.get_operations():
        if op.type.startswith("BatchMatMul"):
            counts["BatchMatMul"] = counts.get("BatchMatMul", 0) + _batch_matmul_flops(op)
    return counts


def _batch_matmul_flops(op) -> int:
    x = op.inputs[0].shape.as_list()
    out = op.outputs[0].shape.as_list()
    depth = x[-2] if op.get_attr("adj_x") else x[-1]
    batch = 1
    for size in out[:-2]:
        batch *= size
    return 2 * batch * out[-2] * out[-1] * depth


def function_flops(concrete_function) -> dict[str, int]:
    """:func:`graph_flops` of a concrete ``tf.function`` (``fn.get_concrete_function(...)``)."""
    return graph_flops(concrete_function.graph)


def forward_flops(net, side: int, batch: int = 1) -> dict[str, int]:
    """Per-op FLOPs of ``net(images, training=False)`` on ``[batch, side, side, 3]``.

    Args:
        net: a built Keras model taking float32 NHWC images (any value range:
            the count does not depend on the values).
        side: image height and width in pixels.
        batch: images per call. Default 1.
    """

    def forward(images):
        return net(images, training=False)

    spec = tf.TensorSpec([batch, side, side, 3], tf.float32)
    return function_flops(tf.function(forward).get_concrete_function(spec))


def total_gflop(counts: dict[str, int]) -> float:
    """The sum of per-op counts in GFLOP (1e9 floating-point operations)."""
    return sum(counts.values()) / 1e9
