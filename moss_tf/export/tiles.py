"""The command line's tiled deraining as one TensorFlow graph, for the SavedModel.

:class:`GraphDerainer` does inside a graph what
:class:`~moss_tf.infer.derain.Derainer` does in Python, so TF Serving (which
runs no Python) gives the command line's result: an image whose sides fit in
``tile_size`` goes through the network whole; a larger one is reflect-padded
to multiples of the network's size multiple and cut into the same
overlapping tiles (:func:`~moss_tf.infer.derain.tile_starts`), gets the whole
photo's memory update from the same first pass
(:func:`~moss_tf.infer.derain.owned_statistics`, summed in float64 in the same
order), and the second pass's outputs are blended with the same windows
(:func:`~moss_tf.infer.derain.blend_window`) and added in the same order.

Memory is bounded by the tile, not the photo, except for the photo itself:
one tile goes through the network at a time, tiles are cut from the image
(reflect-padded by index, no padded copy) and converted to floats one at a
time, and the blend keeps one band of rows (``tile_size`` rows by the image
width, 16 bytes a pixel) instead of full-size float sums: a band is finished
and converted to the output type as soon as the next row of tiles starts
below it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from moss_tf.infer.derain import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE_SIZE,
    Derainer,
    blend_window,
    owned_statistics,
)

__all__ = ["GraphDerainer", "graph_owned_ranges", "graph_tile_starts", "reflect_indices"]


def graph_tile_starts(length, tile_size: int, overlap: int, multiple: int):
    """:func:`~moss_tf.infer.derain.tile_starts` for a ``length`` known when the graph runs.

    ``length`` must be a multiple of ``multiple`` (as the padded image's
    sides are). Returns int32 ``[n]``, the same starts.
    """
    length = tf.cast(length, tf.int64)
    units, tile_units = length // multiple, tile_size // multiple
    stride = tile_units - (-(-overlap // multiple))  # ceil(overlap / multiple)

    def spread():
        count = 1 + (units - tile_units + stride - 1) // stride
        step = tf.cast(units - tile_units, tf.float64) / tf.cast(count - 1, tf.float64)
        index = tf.cast(tf.range(count), tf.float64)
        return multiple * tf.cast(tf.floor(index * step + 0.5), tf.int64)

    starts = tf.cond(length <= tile_size, lambda: tf.zeros([1], tf.int64), spread)
    return tf.cast(starts, tf.int32)


def graph_owned_ranges(starts, tile, length, multiple: int):
    """:func:`~moss_tf.infer.derain.owned_ranges` in a graph: int32 ``[n, 2]`` (begin, end)."""
    starts64 = tf.cast(starts, tf.float64)
    middle = (starts64[1:] + starts64[:-1] + tf.cast(tile, tf.float64)) / 2.0
    inner = multiple * tf.cast(tf.floor(middle / multiple + 0.5), tf.int32)
    bounds = tf.concat([[0], inner, [tf.cast(length, tf.int32)]], axis=0)
    return tf.stack([bounds[:-1] - starts, bounds[1:] - starts], axis=1)


def reflect_indices(positions, length):
    """Source indices of ``positions`` in an axis of ``length`` padded by reflection
    at its end, as ``numpy.pad(mode="reflect")`` pads (repeatedly if need be)."""
    period = tf.maximum(2 * (length - 1), 1)
    folded = positions % period
    return tf.where(folded < length, folded, period - folded)


def _batch_of_one(image):
    """``[h, w, 3]`` -> ``[1, h, w, 3]`` with the channel count known to the graph."""
    return tf.ensure_shape(image[None], [1, None, None, 3])


class _Grid:
    """The tiles of one image: starts, owned ranges and sizes (int32 tensors)."""

    def __init__(self, height, width, tile_size: int, overlap: int, multiple: int):
        self.height, self.width = height, width
        self.padded_height = height + (-height) % multiple
        self.padded_width = width + (-width) % multiple
        self.tile_height = tf.minimum(self.padded_height, tile_size)
        self.tile_width = tf.minimum(self.padded_width, tile_size)
        self.rows = graph_tile_starts(self.padded_height, tile_size, overlap, multiple)
        self.cols = graph_tile_starts(self.padded_width, tile_size, overlap, multiple)
        self.owned_rows = graph_owned_ranges(
            self.rows, self.tile_height, self.padded_height, multiple
        )
        self.owned_cols = graph_owned_ranges(
            self.cols, self.tile_width, self.padded_width, multiple
        )
        self.row_count, self.col_count = tf.size(self.rows), tf.size(self.cols)

    def tile(self, image, i, j):
        """Tile (i, j) of the reflect-padded ``image``, cut without padding the image."""
        rows = reflect_indices(self.rows[i] + tf.range(self.tile_height), self.height)
        cols = reflect_indices(self.cols[j] + tf.range(self.tile_width), self.width)
        top, left = tf.reduce_min(rows), tf.reduce_min(cols)
        bottom, right = tf.reduce_max(rows) + 1, tf.reduce_max(cols) + 1
        window = image[top:bottom, left:right]
        return tf.gather(tf.gather(window, rows - top, axis=0), cols - left, axis=1)

    def owned(self, i, j):
        """(top, bottom, left, right) of the pixels tile (i, j) owns, in tile coordinates."""
        return tf.concat([self.owned_rows[i], self.owned_cols[j]], axis=0)


class GraphDerainer:
    """:class:`~moss_tf.infer.derain.Derainer`'s tiled deraining inside a TensorFlow graph.

    Args:
        net: a :class:`~moss_tf.nn.network.MOSSNet` (images in [-1, 1]).
        tile_size, overlap: as for :class:`~moss_tf.infer.derain.Derainer`
            (checked the same way); the command line's defaults, 512 and 64.
        jit_compile: compile each network call with XLA. Default False.

    Call it inside a ``tf.function``; see :meth:`__call__`.
    """

    def __init__(
        self,
        net: keras.Model,
        tile_size: int = DEFAULT_TILE_SIZE,
        overlap: int = DEFAULT_OVERLAP,
        jit_compile: bool = False,
    ):
        self.two_pass = Derainer(net, tile_size=tile_size, overlap=overlap).two_pass
        self.net, self.tile_size, self.overlap = net, tile_size, overlap
        # Row k = 2 * rise + fall: the window of a full tile with those neighbours.
        self._windows = np.stack(
            [blend_window(tile_size, overlap, rise, fall) for rise in (0, 1) for fall in (0, 1)]
        )

        def forward(images):
            return net(images, training=False)

        def statistics(tile, owned):
            return owned_statistics(net, tile, owned)

        # Functions with fixed signatures: each is traced once and shared by
        # every caller (both serving signatures), which keeps exports quick.
        images = tf.TensorSpec([None, None, None, 3], tf.float32)
        jit = jit_compile or None
        self._forward = tf.function(forward, input_signature=[images], jit_compile=jit)
        self._forward_with_memory = tf.function(
            net.call_with_memory,
            input_signature=[images, tf.TensorSpec([1, None, None], tf.float32)],
            jit_compile=jit,
        )
        self._statistics = tf.function(
            statistics, input_signature=[images, tf.TensorSpec([4], tf.int32)], jit_compile=jit
        )

    def __call__(self, image, prepare, finish, dtype):
        """Derain one image ``[H, W, C]``.

        Args:
            image: the image as it came (e.g. uint8 with 1 to 4 channels).
            prepare: maps a part of ``image`` (a tile, or the whole image when
                it fits in one) to float32 ``[h, w, 3]`` in [-1, 1].
            finish: maps the network's float32 ``[h, w, 3]`` in [-1, 1] to the
                output (``dtype``), pixel by pixel; it sees bands of rows.
            dtype: what ``finish`` returns.

        Returns:
            ``[H, W, 3]`` of ``dtype``.
        """
        height, width = tf.shape(image)[0], tf.shape(image)[1]

        def whole():
            return finish(self._forward(_batch_of_one(prepare(image)))[0])

        def tiled():
            grid = _Grid(height, width, self.tile_size, self.overlap, self.net.size_multiple)
            items = self._photo_memory(image, grid, prepare) if self.two_pass else None
            return self._blend(image, grid, prepare, finish, dtype, items)

        return tf.cond(tf.maximum(height, width) <= self.tile_size, whole, tiled)

    def _photo_memory(self, image, grid, prepare):
        """First pass: the memory ``[1, K, C]`` updated with the whole photo's statistics."""
        items = self.net.memory.items
        tiles = grid.row_count * grid.col_count

        def body(k, sums, counts):
            i, j = k // grid.col_count, k % grid.col_count
            tile = _batch_of_one(prepare(grid.tile(image, i, j)))
            tile_sums, tile_counts = self._statistics(tile, grid.owned(i, j))
            return (
                k + 1,
                sums + tf.cast(tile_sums, tf.float64),
                counts + tf.cast(tile_counts, tf.float64),
            )

        start = (
            tf.constant(0),
            tf.zeros([1, *items.shape], tf.float64),
            tf.zeros([1, items.shape[0]], tf.float64),
        )
        # One tile at a time: parallel iterations would hold several tiles' activations.
        _, sums, counts = tf.while_loop(lambda k, *_: k < tiles, body, start, parallel_iterations=1)
        return self.net.memory.items_from_statistics(
            tf.cast(sums, tf.float32), tf.cast(counts, tf.float32)
        )

    def _window(self, size, index, count):
        """The blend window of the tile at ``index`` of ``count`` along one axis."""
        rise, fall = tf.cast(index > 0, tf.int32), tf.cast(index < count - 1, tf.int32)
        return tf.constant(self._windows)[2 * rise + fall][:size]

    def _blend(self, image, grid, prepare, finish, dtype, items):
        """Second (or only) pass: tiles through the network, blended one band of rows at a time.

        The band holds, for padded rows ``[rows[i], rows[i] + tile_height)``,
        the weighted sums (3 channels) and the weight (1), columns first so a
        tile is added in place. When row ``i`` of tiles is done, the rows
        above ``rows[i + 1]`` are final.
        """
        tile_h, tile_w = grid.tile_height, grid.tile_width

        def add_tile(i, j, band):
            tile = _batch_of_one(prepare(grid.tile(image, i, j)))
            if items is None:
                out = self._forward(tile)[0]
            else:
                out = self._forward_with_memory(tile, items)[0]
            w_rows = self._window(tile_h, i, grid.row_count)
            w_cols = self._window(tile_w, j, grid.col_count)
            weights = (w_rows[:, None] * w_cols[None, :])[..., None]
            update = tf.concat([out * weights, weights], axis=-1)
            columns = (grid.cols[j] + tf.range(tile_w))[:, None]
            return tf.tensor_scatter_nd_add(band, columns, tf.transpose(update, [1, 0, 2]))

        def row_body(i, band, bands):
            _, band = tf.while_loop(
                lambda j, _: j < grid.col_count,
                lambda j, band: (j + 1, add_tile(i, j, band)),
                (tf.constant(0), band),
                parallel_iterations=1,
            )
            last = tf.equal(i, grid.row_count - 1)
            done = tf.where(
                last, tile_h, grid.rows[tf.minimum(i + 1, grid.row_count - 1)] - grid.rows[i]
            )
            final = tf.transpose(band[:, :done], [1, 0, 2])
            keep = tf.clip_by_value(grid.height - grid.rows[i], 0, done)
            final = final[:keep, : grid.width]
            bands = bands.write(i, finish(final[..., :3] / final[..., 3:]))
            fresh = tf.zeros([grid.padded_width, done, 4], tf.float32)
            return i + 1, tf.concat([band[:, done:], fresh], axis=1), bands

        start = (
            tf.constant(0),
            tf.zeros([grid.padded_width, tile_h, 4], tf.float32),
            tf.TensorArray(
                dtype, size=grid.row_count, infer_shape=False, element_shape=[None, None, 3]
            ),
        )
        _, _, bands = tf.while_loop(
            lambda i, *_: i < grid.row_count, row_body, start, parallel_iterations=1
        )
        return bands.concat()
