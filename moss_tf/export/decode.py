"""Decoding image files inside a TensorFlow graph exactly as the command line reads them.

The served ``derain_bytes`` signature must see the pixels that
:func:`~moss_tf.data.images.read_image` (Pillow) gives the command line, and
must refuse a decompression bomb before decoding it. The rules, all inside the
graph (TF Serving runs no Python):

* Formats: PNG, JPEG and BMP. GIF is refused (TensorFlow's GIF decoder
  decodes every frame, so a small animated file can expand without bound);
  other formats are refused too.
* The size the file declares (PNG ``IHDR``, JPEG frame header, BMP header)
  is checked against the pixel limit *before* anything is decoded.
* JPEG is decoded with the accurate integer DCT and fancy upsampling, what
  Pillow (libjpeg-turbo) uses: bit-identical on the 147 real rainy photos of
  ``sirr_real_rainy`` (TensorFlow's default fast DCT differs by up to 5
  levels, mean 0.9).
* PNG: every bit depth and colour type as Pillow reads it; 16-bit grayscale
  becomes ``round(v / 257)``, other 16-bit images keep their high byte.
  Transparency (gray + alpha, RGBA, a palette with a transparent colour) is
  composited over white with the command line's arithmetic; see
  :func:`rgb_uint8`.
* EXIF orientation is applied, as the command line does: from the first
  ``Exif`` APP1 segment of a JPEG, or a PNG ``eXIf`` chunk before the image
  data (Orientation tag of IFD0, type SHORT or LONG, count 1). Orientation
  given only in XMP, which Pillow also reads, is not applied.
* BMP is decoded by TensorFlow (3 channels; alpha is dropped).

:func:`decode_image` returns the pixels *before* the colour conversion, 1 to
4 channels, so a large gray or RGBA photo costs 1 or 4 bytes a pixel; the
tiling converts one tile at a time with :func:`rgb_uint8`.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "ACCEPTED_FORMATS",
    "check_declared_size",
    "declared_size",
    "decode_image",
    "exif_orientation",
    "orient",
    "rgb_uint8",
]

#: What ``derain_bytes`` decodes.
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP")

_PNG, _JPEG, _BMP, _GIF, _UNKNOWN = range(5)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ORIENTATION_TAG = 0x0112
# Segments / chunks looked at before the image data while searching for EXIF.
_MAX_HEADER_STEPS = 4096
_BACKGROUND = 255.0  # as moss_tf.data.images: transparent pixels become white


def _bytes_at(data, position, count):
    """uint8 ``[count]``: ``data[position : position + count]``, zero-padded past the end."""
    size = tf.strings.length(data)
    position = tf.clip_by_value(tf.cast(position, tf.int32), 0, size)
    raw = tf.io.decode_raw(tf.strings.substr(data, position, count), tf.uint8)
    return tf.reshape(tf.pad(raw, [[0, count - tf.size(raw)]]), [count])


def _big_endian(octets):
    """An unsigned big-endian integer (int64) from uint8 ``octets``."""
    value = tf.constant(0, tf.int64)
    for k in range(octets.shape[0]):
        value = value * 256 + tf.cast(octets[k], tf.int64)
    return value


def _signed_little_endian(octets):
    """A signed 32-bit little-endian integer (int64) from 4 uint8 ``octets``."""
    value = _big_endian(tf.reverse(octets, [0]))
    return tf.where(value >= 2**31, value - 2**32, value)


def _file_kind(data):
    head = tf.strings.substr(data, 0, 8)
    kinds = [
        (tf.equal(head, _PNG_SIGNATURE), _PNG),
        (tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff"), _JPEG),
        (tf.equal(tf.strings.substr(head, 0, 2), b"BM"), _BMP),
        (tf.equal(tf.strings.substr(head, 0, 4), b"GIF8"), _GIF),
    ]
    kind = tf.constant(_UNKNOWN)
    for matches, code in reversed(kinds):
        kind = tf.where(matches, code, kind)
    return kind


def declared_size(data):
    """``(kind, height, width)`` a file declares in its header, read without decoding.

    ``kind`` is an internal format code; height and width are int64 (0 for
    a format that is not accepted; a header cut short reads as zeros, and the
    decoder then reports the file as broken).
    """
    kind = _file_kind(data)

    def png():
        return _big_endian(_bytes_at(data, 20, 4)), _big_endian(_bytes_at(data, 16, 4))

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
        return shape[0], shape[1]

    def bmp():
        # Signed 32-bit; a negative height means rows stored top-down.
        width = _signed_little_endian(_bytes_at(data, 18, 4))
        height = _signed_little_endian(_bytes_at(data, 22, 4))
        return tf.abs(height), tf.abs(width)

    def none():
        return tf.constant(0, tf.int64), tf.constant(0, tf.int64)

    height, width = tf.switch_case(kind, [png, jpeg, bmp, none, none])
    return kind, height, width


def check_declared_size(data, max_pixels: int, what: str):
    """An op that fails with a clear message unless ``data`` is an accepted file of at
    most ``max_pixels`` pixels; returns ``(kind, checked data)``, which runs after it."""
    kind, height, width = declared_size(data)
    accepted = tf.reduce_any(tf.equal(kind, [_PNG, _JPEG, _BMP]))
    is_gif = tf.equal(kind, _GIF)
    known = tf.debugging.Assert(
        accepted,
        [
            tf.where(
                is_gif,
                f"{what}: GIF is not accepted (an animated GIF decodes every frame); "
                "send PNG or JPEG",
                f"{what}: not a PNG, JPEG or BMP file (its first bytes match none of "
                "their signatures)",
            )
        ],
    )
    with tf.control_dependencies([known]):
        pixels = height * width
        small = tf.debugging.Assert(
            pixels <= max_pixels,
            [
                tf.strings.format(
                    what.replace("{", "(").replace("}", ")")
                    + ": the file declares {}x{} = {} pixels, more than the limit of {} "
                    "pixels set at export (--max-pixels); refused before decoding",
                    (width, height, pixels, max_pixels),
                )
            ],
        )
    with tf.control_dependencies([small]):
        return tf.identity(kind), tf.identity(data)


# ---------------------------------------------------------------------------- EXIF


def _jpeg_exif_block(data):
    """``(offset, length)`` of the TIFF block of the first ``Exif`` APP1 segment; (0, 0) if none.

    Walks the marker segments before the first scan as Pillow does (fill
    bytes skipped, stand-alone markers stepped over).
    """
    size = tf.strings.length(data)

    def searching(position, found, length, steps):
        return tf.logical_and(found < 0, steps < _MAX_HEADER_STEPS)

    def step(position, found, length, steps):
        head = tf.cast(_bytes_at(data, position, 4), tf.int32)
        marker = head[1]
        segment = head[2] * 256 + head[3]
        stop = tf.logical_or(
            tf.logical_or(head[0] != 0xFF, position + 4 > size),
            tf.logical_or(tf.equal(marker, 0xDA), tf.equal(marker, 0xD9)),
        )
        fill = tf.equal(marker, 0xFF)
        standalone = tf.logical_or(
            tf.logical_and(marker >= 0xD0, marker <= 0xD8), tf.equal(marker, 0x01)
        )
        is_exif = tf.logical_and(
            tf.equal(marker, 0xE1),
            tf.equal(tf.strings.substr(data, tf.minimum(position + 4, size), 6), b"Exif\x00\x00"),
        )
        found = tf.where(stop, 0, tf.where(is_exif, position + 10, found))
        length = tf.where(is_exif, segment - 8, length)
        advance = tf.where(fill, 1, tf.where(standalone, 2, 2 + segment))
        return position + advance, found, length, steps + 1

    _, found, length, _ = tf.while_loop(
        searching, step, (tf.constant(2), tf.constant(-1), tf.constant(0), tf.constant(0))
    )
    found = tf.maximum(found, 0)
    return found, tf.where(found > 0, length, 0)


def _png_exif_block(data):
    """``(offset, length)`` of a PNG ``eXIf`` chunk before the image data; (0, 0) if none."""
    size = tf.strings.length(data)

    def searching(position, found, length, steps):
        return tf.logical_and(found < 0, steps < _MAX_HEADER_STEPS)

    def step(position, found, length, steps):
        chunk = tf.cast(_big_endian(_bytes_at(data, position, 4)), tf.int32)
        name = tf.strings.substr(data, tf.minimum(position + 4, size), 4)
        stop = tf.logical_or(
            position + 8 > size,
            tf.reduce_any(tf.equal(name, [b"IDAT", b"IEND"])) | (chunk < 0),
        )
        is_exif = tf.equal(name, b"eXIf")
        found = tf.where(stop, 0, tf.where(is_exif, position + 8, found))
        length = tf.where(is_exif, chunk, length)
        return position + 12 + chunk, found, length, steps + 1

    _, found, length, _ = tf.while_loop(
        searching, step, (tf.constant(8), tf.constant(-1), tf.constant(0), tf.constant(0))
    )
    found = tf.maximum(found, 0)
    return found, tf.where(found > 0, length, 0)


def _orientation_from_tiff(data, offset, length):
    """The EXIF Orientation (1 to 8) of IFD0 of the TIFF block at ``data[offset:]``; 1 if absent."""
    header = _bytes_at(data, offset, 8)
    little = tf.reduce_all(tf.equal(header[:2], [0x49, 0x49]))  # "II"
    big = tf.reduce_all(tf.equal(header[:2], [0x4D, 0x4D]))  # "MM"

    def number(octets):
        """Unsigned integers (int64) from uint8 ``[..., n]`` in the block's byte order."""
        width = octets.shape[-1]
        powers = tf.constant([256**k for k in range(width)], tf.int64)
        weights = tf.where(little, powers, tf.reverse(powers, [0]))
        return tf.reduce_sum(tf.cast(octets, tf.int64) * weights, axis=-1)

    ifd = tf.cast(number(header[4:8]), tf.int32)
    ifd_ok = tf.logical_and(ifd >= 8, ifd + 2 <= length)
    count = tf.cast(number(_bytes_at(data, offset + ifd, 2)), tf.int32)
    # Only entries that lie inside the block: Pillow reads nothing beyond it.
    count = tf.where(ifd_ok, tf.minimum(count, (length - ifd - 2) // 12), 0)
    entries = tf.reshape(_bytes_at(data, offset + ifd + 2, 12 * count), [-1, 12])
    tags, types, counts = number(entries[:, 0:2]), number(entries[:, 2:4]), number(entries[:, 4:8])
    short, long_value = number(entries[:, 8:10]), number(entries[:, 8:12])
    value = tf.where(tf.equal(types, 3), short, tf.where(tf.equal(types, 4), long_value, -1))
    matches = tf.logical_and(tf.equal(tags, _ORIENTATION_TAG), tf.equal(counts, 1))
    first = tf.argmax(tf.cast(tf.concat([matches, [True]], 0), tf.int32), output_type=tf.int32)
    orientation = tf.gather(tf.concat([value, [1]], 0), first)
    orientation = tf.where(tf.logical_or(little, big), orientation, 1)
    return tf.where((orientation >= 1) & (orientation <= 8), tf.cast(orientation, tf.int32), 1)


def exif_orientation(data, kind):
    """The EXIF Orientation the command line applies (1 = upright) of an encoded file."""

    def from_block(block):
        def read():
            offset, length = block()
            return tf.cond(
                length > 0,
                lambda: _orientation_from_tiff(data, offset, length),
                lambda: tf.constant(1),
            )

        return read

    def upright():
        return tf.constant(1)

    return tf.switch_case(
        kind,
        [from_block(lambda: _png_exif_block(data)), from_block(lambda: _jpeg_exif_block(data))],
        default=upright,
    )


def orient(pixels, orientation):
    """Pixels ``[H, W, C]`` turned upright for an EXIF ``orientation``, as Pillow's
    ``ImageOps.exif_transpose`` does."""

    def transposed():
        return tf.transpose(pixels, [1, 0, 2])

    branches = [
        lambda: pixels,  # 1
        lambda: tf.reverse(pixels, [1]),  # 2: FLIP_LEFT_RIGHT
        lambda: tf.reverse(pixels, [0, 1]),  # 3: ROTATE_180
        lambda: tf.reverse(pixels, [0]),  # 4: FLIP_TOP_BOTTOM
        transposed,  # 5: TRANSPOSE
        lambda: tf.reverse(transposed(), [1]),  # 6: ROTATE_270
        lambda: tf.reverse(transposed(), [0, 1]),  # 7: TRANSVERSE
        lambda: tf.reverse(transposed(), [0]),  # 8: ROTATE_90
    ]
    return tf.switch_case(orientation - 1, branches)


# ---------------------------------------------------------------------------- decoding


def _decode_png(data):
    """uint8 ``[H, W, C]``, C the file's own channels (1 to 4; a palette with a
    transparent colour gives 4), as Pillow reads them."""
    depth, colour = tf.unstack(tf.cast(_bytes_at(data, 24, 2), tf.int32))

    def gray16():
        values = tf.io.decode_png(data, channels=1, dtype=tf.uint16)
        # round(v / 257) as moss_tf.data.images; never a tie for integers.
        rounded = values // 257 + tf.cast(values % 257 >= 129, tf.uint16)
        return tf.cast(rounded, tf.uint8)

    def native():
        # For 16-bit colour TensorFlow keeps the high byte, as Pillow does.
        return tf.io.decode_png(data, channels=0, dtype=tf.uint8)

    return tf.cond(tf.logical_and(tf.equal(depth, 16), tf.equal(colour, 0)), gray16, native)


def decode_image(data, max_pixels: int, what: str = "image"):
    """Decode one encoded PNG, JPEG or BMP like the command line, refusing bombs first.

    Args:
        data: a string scalar, the file's bytes.
        max_pixels: files declaring more pixels are refused before decoding.
        what: names the image in error messages (e.g. ``"derain_bytes"``).

    Returns:
        uint8 ``[H, W, C]``, upright (EXIF orientation applied), C in 1..4:
        gray, gray + alpha, RGB, RGBA; :func:`rgb_uint8` makes them RGB.

    Raises (when run):
        InvalidArgumentError: naming ``what``: not an accepted format, more
            pixels than ``max_pixels``, or a decoder's own error.
    """
    kind, data = check_declared_size(data, max_pixels, what)
    branches = [
        lambda: _decode_png(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_bmp(data, channels=3),
    ]
    pixels = tf.switch_case(kind, branches)
    return orient(pixels, exif_orientation(data, kind))


def _composite(rgba):
    """RGBA uint8 over white, rounded: ``moss_tf.data.images``' arithmetic (float32)."""
    rgba = tf.cast(rgba, tf.float32)
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + _BACKGROUND * (1.0 - alpha)
    return tf.cast(tf.clip_by_value(tf.round(rgb), 0.0, 255.0), tf.uint8)


def rgb_uint8(pixels):
    """uint8 ``[H, W, C]`` from :func:`decode_image` -> RGB uint8 ``[H, W, 3]``.

    Gray is repeated in three channels; alpha is composited over white.
    """
    channels = tf.shape(pixels)[-1]

    def gray():
        return tf.repeat(pixels[..., :1], 3, axis=-1)

    def gray_alpha():
        return _composite(tf.gather(pixels, [0, 0, 0, 1], axis=-1))

    def rgb():
        return tf.ensure_shape(pixels, [None, None, 3])

    def rgba():
        return _composite(pixels)

    return tf.switch_case(channels - 1, [gray, gray_alpha, rgb, rgba])
