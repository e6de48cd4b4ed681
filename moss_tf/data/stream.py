"""Training images read from their files inside the tf.data graph (``data.load: stream``).

The in-memory :class:`~moss_tf.data.pool.ImagePool` decodes every image once;
for datasets too large for that, :class:`FileImages` keeps only the file
names and, per crop, reads and decodes one file with TensorFlow's own
decoders in the parallel ``map`` of the stream. Memory no longer grows with
the dataset: what stays resident is one path string and four numbers per file.

Before training, every file's header is read (:func:`probe_images`, a fraction
of a millisecond per file, no pixels) so that the checks of the in-memory
path still happen up front: pairs of different sizes, images smaller than
the crop, and formats the graph decoders cannot read as Pillow does.

The graph decoding reproduces :func:`moss_tf.data.images.read_image` exactly
(tested) for PNG, JPEG (``INTEGER_ACCURATE`` IDCT, the one libjpeg and
Pillow use by default), BMP and GIF; in 8-bit RGB, gray, palette and with
transparency (composited over white); with EXIF orientation applied. One
difference remains, documented and tested: unpaired images larger than
``data.max_side`` are downscaled with area averaging here, while Pillow first
decodes JPEGs at a reduced scale (``draft``) then box-filters; pairs are
downscaled with the same area filter in both paths and stay identical.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from moss_tf.data.images import pixel_limit_of, too_many_pixels
from moss_tf.data.shard_files import ImageHeader, ShardMember

__all__ = ["FileImages", "ImageProbe", "probe_images", "scaled_size"]

# Pillow format -> modes the graph decoders turn into exactly what read_image returns.
_STREAMABLE_MODES = {
    "PNG": {"RGB", "RGBA", "L", "LA", "P", "1"},
    "JPEG": {"RGB", "L"},
    "BMP": {"RGB", "RGBA", "L", "P", "1"},
    "GIF": {"P", "L"},
}
_ALPHA_MODES = {"RGBA", "LA", "PA"}
_EXIF_ORIENTATION = 0x0112
_BACKGROUND = 255.0  # as read_image: transparent pixels become white


@dataclass(frozen=True)
class ImageProbe(ImageHeader):
    """What the header of the file at ``path`` (or stored in a shard) says."""

    path: Path | ShardMember = field(kw_only=True)


def _probe(path: Path) -> ImageProbe:
    try:
        if path.stat().st_size == 0:
            return ImageProbe(path=path, problem=f"{path}: empty file (0 bytes)")
        with Image.open(path) as image:
            width, height = image.size
            fmt, mode = image.format, image.mode
            alpha = mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info)
            orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1)) if fmt == "JPEG" else 1
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError) as err:
        return ImageProbe(path=path, problem=f"{path}: not an image file Pillow can read ({err})")
    if width * height > pixel_limit_of():
        return ImageProbe(path=path, problem=too_many_pixels(path, width, height, pixel_limit_of()))
    if orientation not in range(1, 9):
        orientation = 1  # read_image ignores invalid tags too
    if orientation >= 5:  # transposed: the upright image is width x height
        width, height = height, width
    problem = None
    if mode not in _STREAMABLE_MODES.get(fmt, ()):
        problem = (
            f"{path}: {fmt} in mode {mode} is not read in the tf.data graph (readable there: "
            "8-bit PNG, JPEG, BMP, GIF); convert it or set data.load=memory"
        )
    elif fmt == "GIF" and alpha:
        problem = f"{path}: transparent GIF is not read in the tf.data graph; set data.load=memory"
    return ImageProbe(height, width, orientation, alpha, problem, path=path)


def _recall(member: ShardMember) -> ImageProbe:
    """The probe of a file stored in a shard, from what its manifest says (no reading)."""
    return ImageProbe(**asdict(member.header), path=member)


def probe_images(paths: Sequence[Path | ShardMember]) -> list[ImageProbe]:
    """Read the headers of ``paths`` in parallel threads, in order. No pixels are decoded.

    Files stored in shards are not read: their manifest holds their headers.
    """
    if all(isinstance(p, ShardMember) for p in paths):
        return [_recall(p) for p in paths]
    workers = min(8, 2 * (os.cpu_count() or 1))

    def probe(path):
        return _recall(path) if isinstance(path, ShardMember) else _probe(path)

    with ThreadPoolExecutor(max_workers=workers) as executor:
        return list(executor.map(probe, paths, chunksize=64))


def scaled_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(height, width) after downscaling so the longer side is at most ``max_side``."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _decode(contents: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """uint8 ``[H, W, 3]`` of an encoded image, transparency composited over white."""

    def jpeg():
        return tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE")

    def opaque():
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    def transparent():
        rgba = tf.cast(
            tf.io.decode_image(contents, channels=4, expand_animations=False), tf.float32
        )
        weight = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * weight + _BACKGROUND * (1.0 - weight)
        return tf.cast(tf.clip_by_value(tf.round(rgb), 0.0, 255.0), tf.uint8)

    image = tf.cond(tf.io.is_jpeg(contents), jpeg, lambda: tf.cond(alpha, transparent, opaque))
    image.set_shape([None, None, 3])
    return image


def _orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Apply EXIF orientation 1..8 as Pillow's ``ImageOps.exif_transpose`` does."""

    def transpose(x):
        return tf.transpose(x, [1, 0, 2])

    branches = [
        lambda: image,  # 1: upright
        lambda: tf.reverse(image, [1]),  # 2: mirrored
        lambda: tf.reverse(image, [0, 1]),  # 3: rotated 180
        lambda: tf.reverse(image, [0]),  # 4: flipped
        lambda: transpose(image),  # 5: transposed
        lambda: tf.image.rot90(image, 3),  # 6: rotated 90 clockwise
        lambda: tf.reverse(transpose(image), [0, 1]),  # 7: transversed
        lambda: tf.image.rot90(image, 1),  # 8: rotated 90 counter-clockwise
    ]
    return tf.switch_case(orientation - 1, branches)


def _area_downscale(image: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """uint8 image area-resized to ``size`` when it differs (as pool._downscale does)."""

    def resize():
        resized = tf.image.resize(image, size, method="area")
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    return tf.cond(tf.reduce_all(tf.shape(image)[:2] == size), lambda: image, resize)


def _read_range(file: tf.Tensor, offset: tf.Tensor, length: tf.Tensor, size: tf.Tensor):
    """``length`` bytes of ``file`` from ``offset`` (a file stored in a shard of ``size`` bytes)."""
    after = size - offset - length
    record = tf.data.FixedLengthRecordDataset(file, length, header_bytes=offset, footer_bytes=after)
    return record.get_single_element()


def _location(probe: ImageProbe) -> tuple[str, int, int, int]:
    """(file, offset, length, file size) to read; offset -1 = the whole file."""
    member = probe.path
    if isinstance(member, ShardMember):
        return str(member.shard), member.offset, member.length, member.shard_bytes
    return str(member), -1, 0, 0


class FileImages:
    """Images read from files per element; ``get(i)`` works like ``ImagePool.get``.

    A loose file is read whole (``tf.io.read_file``); a file stored in a shard
    is read from its byte range (a one-record ``FixedLengthRecordDataset``).
    Either way only the file's own bytes are read, in the parallel ``map`` of
    the stream, so elements keep their order and seeds: the same crops come
    from loose files and from their shards.

    Args:
        probes: the files, as :func:`probe_images` saw them (none with a problem).
        max_side: downscale images whose longer side exceeds this (None = never).
    """

    def __init__(self, probes: Sequence[ImageProbe], max_side: int | None):
        if not probes:
            raise ValueError("FileImages needs at least one image")
        self.max_side = max_side
        self.count = len(probes)
        self.channels = 3
        files, offsets, lengths, file_bytes = zip(*map(_location, probes), strict=True)
        in_shards = {offset >= 0 for offset in offsets}
        self.sharded = in_shards.pop() if len(in_shards) == 1 else None  # None: some of each
        self.paths = tf.constant(files)
        self.offsets = tf.constant(offsets, dtype=tf.int64)
        self.lengths = tf.constant(lengths, dtype=tf.int64)
        self.file_bytes = tf.constant(file_bytes, dtype=tf.int64)
        self.orientation = tf.constant([p.orientation for p in probes], dtype=tf.int32)
        self.alpha = tf.constant([p.alpha for p in probes])
        sizes = [scaled_size(p.height, p.width, max_side) for p in probes]
        self.sizes = tf.constant(sizes, dtype=tf.int32)

    def __len__(self) -> int:
        return self.count

    def _contents(self, index: tf.Tensor) -> tf.Tensor:
        """The encoded bytes of image ``index``."""
        path, offset = self.paths[index], self.offsets[index]

        def whole_file():
            return tf.io.read_file(path)

        def byte_range():
            return _read_range(path, offset, self.lengths[index], self.file_bytes[index])

        if self.sharded is None:  # loose files and shards mixed: decided per image
            return tf.cond(offset < 0, whole_file, byte_range)
        return byte_range() if self.sharded else whole_file()

    def get(self, index: tf.Tensor) -> tf.Tensor:
        """Image ``index`` as uint8 ``[H, W, 3]`` in [0, 255], read from its file."""
        index = tf.cast(index, tf.int32)
        image = _decode(self._contents(index), self.alpha[index])
        image = _orient(image, self.orientation[index])
        return _area_downscale(image, self.sizes[index])
