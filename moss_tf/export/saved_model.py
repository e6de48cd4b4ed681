"""Export a trained network as a SavedModel that TF Serving loads.

    moss-export --run-dir runs/demo --output exports/moss
    moss-export --checkpoint runs/demo/semi/best.weights.h5 --output exports/moss

Each export writes the next version folder under ``--output``
(``exports/moss/1/``, ``2/``, ...), the layout TF Serving watches. The
version is written under a temporary name and renamed into place, so a
running server never sees half a model.

Signatures:

``serving_default``
    input ``images``: float32 ``[batch, H, W, 3]`` in [0, 1], any H and W;
    output ``derained``: float32, same shape, in [0, 1]. Each image's result
    is the one it gets alone (the memory updates per image, or not at all
    with ``--inference-memory frozen``), so batching requests
    (``--enable_batching``) changes no one's result.
``derain_bytes``
    input ``image_bytes``: string ``[batch]`` of encoded PNG, JPEG or BMP
    files, read exactly as the command line reads them (EXIF orientation
    applied, transparency over white, JPEG with the accurate DCT: see
    :mod:`moss_tf.export.decode`); images of one batch may differ in size;
    output ``derained_bytes``: string ``[batch]`` of 8-bit RGB PNGs, equal to
    the pixels ``python evaluate.py --input`` computes. REST clients send
    ``{"instances": [{"b64": "..."}]}``.

Both signatures treat hostile input as the command line does and stay
within bounded memory:

* an image with more than ``max_pixels`` pixels (``--max-pixels``; default
  :data:`moss_tf.data.images.MAX_PIXELS`, the command line's limit) is
  refused with ``InvalidArgument`` naming its size and the limit; an encoded
  file is refused from its header, before it is decoded;
* ``images`` holding NaN or Inf are refused (``InvalidArgument``);
* images are derained one at a time, larger ones tile by tile inside the
  graph (:class:`moss_tf.export.tiles.GraphDerainer`: the command line's
  tiles, ``--tile-size`` 512 and ``--overlap`` 64, its two passes and its
  blending), so memory grows with the tile and the photo's own pixels, not
  with the network's activations over the photo.

``assets.extra/tf_serving_warmup_requests`` holds one warm-up request per
signature (a 256 × 256 image) in the TFRecord-of-``PredictionLog`` format
TF Serving replays at load time. The protos come from the
``tensorflow-serving-api`` package (the official definitions; it needs only
``tensorflow``, ``grpcio`` and ``protobuf``), which clients need for gRPC anyway.

``jit_compile`` (``--jit-compile``) compiles the network with XLA. It is off
by default: on CPU it measured slower than the plain graph (see
``saved_models/README.md``), and TF Serving runs XLA on CPU only with
``--xla_cpu_compilation_enabled=true``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from moss_tf.data import from_model_range, to_model_range
from moss_tf.data import images as image_files
from moss_tf.errors import MossError
from moss_tf.export.decode import decode_image, rgb_uint8
from moss_tf.export.tiles import GraphDerainer
from moss_tf.infer.derain import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE

__all__ = [
    "BYTES_SIGNATURE",
    "DEFAULT_SIGNATURE",
    "SERVING_MEMORY_MODES",
    "ServingModule",
    "export_saved_model",
    "next_version",
    "write_warmup_requests",
]

DEFAULT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "derain_bytes"
WARMUP_FILE = "tf_serving_warmup_requests"
# Memory modes in which an image's result does not depend on the rest of its batch.
SERVING_MEMORY_MODES = ("per_image", "frozen")
_WARMUP_SIZE = 256


class ServingModule(tf.Module):
    """The network behind the two serving signatures (images in [0, 1], or encoded bytes).

    Args:
        net: a built :class:`~moss_tf.nn.network.MOSSNet` (images in [-1, 1]).
        jit_compile: compile the network with XLA. Default False.
        max_pixels: images with more pixels are refused. Default None: the
            command line's limit, :data:`moss_tf.data.images.MAX_PIXELS`.
        tile_size, overlap: the tiling of large images, as the command
            line's ``--tile-size`` and ``--overlap``. Default 512 and 64.
    """

    def __init__(
        self,
        net,
        jit_compile: bool = False,
        max_pixels: int | None = None,
        tile_size: int = DEFAULT_TILE_SIZE,
        overlap: int = DEFAULT_OVERLAP,
    ):
        super().__init__(name="moss_serving")
        self.net = net
        self.max_pixels = image_files.MAX_PIXELS if max_pixels is None else int(max_pixels)
        if self.max_pixels < 1:
            raise MossError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
        self._derainer = GraphDerainer(net, tile_size, overlap, jit_compile=jit_compile)
        # The command line converts uint8 tiles eagerly; in a graph, x / 127.5
        # becomes a multiplication that is off by 1 ulp for 111 of the 256
        # values. A table of the eager values keeps the result the same.
        self._model_range_of_uint8 = to_model_range(np.arange(256, dtype=np.uint8)).numpy()

    def _prepare_uint8(self, pixels):
        """Decoded pixels (1 to 4 channels) -> RGB float32 in [-1, 1], as the command line."""
        codes = tf.cast(rgb_uint8(pixels), tf.int32)
        return tf.gather(tf.constant(self._model_range_of_uint8), codes)

    @staticmethod
    def _finish_uint8(derained):
        """[-1, 1] -> uint8, rounded as ``Derainer.derain_uint8``."""
        return tf.cast(tf.round(from_model_range(derained) * 255.0), tf.uint8)

    def _check_pixels(self, height, width, what):
        """An assert op: ``height x width`` is within the pixel limit."""
        pixels = tf.cast(height, tf.int64) * tf.cast(width, tf.int64)
        return tf.debugging.Assert(
            pixels <= self.max_pixels,
            [
                tf.strings.format(
                    what + ": a {}x{} image has {} pixels, more than the limit of {} pixels "
                    "set at export (--max-pixels)",
                    (width, height, pixels, self.max_pixels),
                )
            ],
        )

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def derain_images(self, images):
        # The declared shape is not enforced when a request arrives: check it
        # at run time so a wrong one gets this sentence, not a failure deep inside.
        images = tf.ensure_shape(images, [None, None, None, 3], name="images_must_be_BxHxWx3")
        shape = tf.shape(images)
        small = self._check_pixels(shape[1], shape[2], DEFAULT_SIGNATURE)
        with tf.control_dependencies([small]):
            # Checks in place (no copy): the error names the signature.
            images = tf.debugging.check_numerics(
                images, f"{DEFAULT_SIGNATURE}: `images` must be finite, values in [0, 1]"
            )

        def one(image):
            return self._derainer(image, to_model_range, from_model_range, tf.float32)

        def each():
            # One image at a time, each alone (its own memory update, bounded memory).
            return tf.map_fn(
                one,
                images,
                fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32),
                parallel_iterations=1,
            )

        branches = [
            lambda: tf.zeros_like(images),  # an empty batch: nothing to stack
            lambda: one(images[0])[None],  # one image: no stacked copy of the result
            each,
        ]
        derained = tf.switch_case(tf.minimum(shape[0], 2), branches)
        return {"derained": tf.ensure_shape(derained, [None, None, None, 3])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def derain_bytes(self, image_bytes):
        image_bytes = tf.ensure_shape(image_bytes, [None], name="image_bytes_must_be_a_batch")

        def one(data):
            pixels = decode_image(data, self.max_pixels, BYTES_SIGNATURE)
            derained = self._derainer(pixels, self._prepare_uint8, self._finish_uint8, tf.uint8)
            return tf.io.encode_png(derained)

        # One image at a time: the images of a request may have different sizes.
        encoded = tf.map_fn(one, image_bytes, fn_output_signature=tf.string, parallel_iterations=1)
        return {"derained_bytes": encoded}


def next_version(base: str | Path) -> int:
    """The version number after the highest numbered folder in ``base`` (1 if none)."""
    base = Path(base)
    numbers = (
        [int(p.name) for p in base.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)]
        if base.is_dir()
        else []
    )
    return max(numbers, default=0) + 1


def _warmup_image() -> np.ndarray:
    """A smooth colour ramp, float32 [1, 256, 256, 3] in [0, 1] (content does not matter)."""
    yy, xx = np.mgrid[:_WARMUP_SIZE, :_WARMUP_SIZE] / (_WARMUP_SIZE - 1.0)
    return np.stack([xx, yy, 0.5 * (xx + yy)], axis=-1)[None].astype(np.float32)


def write_warmup_requests(path: str | Path, model_name: str) -> Path:
    """Write one ``PredictionLog`` warm-up request per signature as a TFRecord file.

    Args:
        path: the file, ``<version>/assets.extra/tf_serving_warmup_requests``.
        model_name: the model name TF Serving serves (the ``--output`` folder's name).
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    images = _warmup_image()
    png = tf.io.encode_png(tf.cast(tf.round(images[0] * 255.0), tf.uint8)).numpy()
    requests = {
        DEFAULT_SIGNATURE: {"images": tf.make_tensor_proto(images)},
        BYTES_SIGNATURE: {"image_bytes": tf.make_tensor_proto([png], dtype=tf.string)},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, inputs in requests.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            for key, proto in inputs.items():
                request.inputs[key].CopyFrom(proto)
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def export_saved_model(
    net,
    output: str | Path,
    jit_compile: bool = False,
    warmup: bool = True,
    inference_memory: str | None = None,
    max_pixels: int | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
) -> Path:
    """Export ``net`` as the next version under ``output``.

    Args:
        net: a built :class:`~moss_tf.nn.network.MOSSNet`.
        output: the model's base folder, e.g. ``saved_models/moss``; created if
            missing. Its name is the model name in warm-up requests.
        jit_compile: compile the network with XLA (see the module docstring).
            Default False.
        warmup: write ``assets.extra/tf_serving_warmup_requests``. Default True.
        inference_memory: what the served network does with its memory:
            ``"per_image"`` (each image's own update) or ``"frozen"``. Both
            make an image's result independent of the other images of its
            request or of a batch TF Serving assembles; the per-batch update
            (``"batch"``) is refused. Default None: ``"frozen"`` if ``net`` is
            frozen, else ``"per_image"``.
        max_pixels: both signatures refuse images with more pixels. Default
            None: the command line's limit, :data:`moss_tf.data.images.MAX_PIXELS`.
        tile_size, overlap: how images larger than one tile are tiled, as
            the command line's ``--tile-size`` and ``--overlap``. Default None:
            the command line's defaults, 512 and 64.

    Returns:
        The version folder written, e.g. ``saved_models/moss/3``.
    """
    if inference_memory is None:
        inference_memory = "frozen" if net.inference_memory == "frozen" else "per_image"
    if inference_memory not in SERVING_MEMORY_MODES:
        raise MossError(
            f"inference_memory={inference_memory!r} cannot be served: one of "
            f"{', '.join(SERVING_MEMORY_MODES)} keeps each request's result its own"
        )
    module = ServingModule(
        net.with_inference_memory(inference_memory),
        jit_compile=jit_compile,
        max_pixels=max_pixels,
        tile_size=DEFAULT_TILE_SIZE if tile_size is None else tile_size,
        overlap=DEFAULT_OVERLAP if overlap is None else overlap,
    )
    base = Path(output)
    base.mkdir(parents=True, exist_ok=True)
    signatures = {
        DEFAULT_SIGNATURE: module.derain_images.get_concrete_function(),
        BYTES_SIGNATURE: module.derain_bytes.get_concrete_function(),
    }
    # A non-numeric name, which TF Serving ignores, until the rename below.
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=base))
    try:
        tf.saved_model.save(module, str(staging), signatures=signatures)
        if warmup:
            write_warmup_requests(staging / "assets.extra" / WARMUP_FILE, base.resolve().name)
        while True:  # another export may take a number between our look and our rename
            version = base / str(next_version(base))
            try:
                os.rename(staging, version)
                return version
            except OSError:
                if not version.exists():
                    raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
