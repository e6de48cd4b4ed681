"""Deraining images of any size: overlapping tiles, seamless blending, files kept as they were.

:class:`Derainer` runs a network on one image at a time. Images that fit in
one tile (``tile_size``, default 512) go through the network whole, so their
output is exactly the network's. Larger images are cut into overlapping
``tile_size`` tiles; each tile's output is weighted by a window that rises
smoothly (raised cosine) over ``overlap`` pixels from every tile edge that
lies inside the image, and the weighted outputs are averaged. Tile borders,
where the network saw reflected padding instead of the real neighbourhood,
therefore count almost nothing, and the weights change smoothly, so no seam
appears. Memory stays bounded: one tile's activations plus the full-size
float32 weighted sum and weights (0.2 GB for a 4000 × 3000 photo); a
12-megapixel photo peaks at about 1.1 GB for the whole process.

:func:`derain_files` derains a file or a folder of a user's photos and
writes each result in the original's format (PNG stays PNG, JPEG stays
JPEG, ...), size and orientation; see :func:`save_like` for the exact rules.

Example::

    derainer = Derainer(net)                       # net: a MOSSNet, images in [-1, 1]
    derain_files(derainer, "my_photos/", "derained/")
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from moss_tf.data import ImageError, from_model_range, list_images, read_image, to_model_range
from moss_tf.errors import MossError

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE_SIZE",
    "Derainer",
    "blend_window",
    "derain_files",
    "output_path",
    "save_like",
    "tile_starts",
]

DEFAULT_TILE_SIZE = 512
DEFAULT_OVERLAP = 64

_ORIENTATION_TAG = 0x0112
_LOSSY_QUALITY = 95  # JPEG and WebP
# Formats written back as they came; others (GIF, ...) become PNG. Many
# cameras' JPEGs open as "MPO" (JPEG plus preview frames): written as JPEG.
_KEPT_FORMATS = {"PNG", "JPEG", "TIFF", "WEBP", "BMP"}
_FORMAT_ALIASES = {"MPO": "JPEG"}
# Formats that can carry alpha.
_ALPHA_FORMATS = {"PNG", "TIFF", "WEBP"}


def tile_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``[0, length)`` with at least ``overlap`` shared pixels.

    The tiles are spread evenly, the first at 0 and the last ending at
    ``length``; a side shorter than ``tile_size`` gets one tile.

    Example:
        >>> tile_starts(1000, 512, 64)
        [0, 488]
    """
    if length <= tile_size:
        return [0]
    count = 1 + math.ceil((length - tile_size) / (tile_size - overlap))
    step = (length - tile_size) / (count - 1)
    return [round(i * step) for i in range(count)]


def blend_window(size: int, ramp: int, rise: bool, fall: bool) -> np.ndarray:
    """1-D tile weights: a raised-cosine rise and/or fall over ``ramp`` pixels, 1 elsewhere.

    Args:
        size: tile length in pixels.
        ramp: ramp length in pixels (the tile overlap).
        rise: ramp up at the start (the tile has a neighbour before it).
        fall: ramp down at the end (the tile has a neighbour after it).

    Returns:
        float32 ``[size]`` in (0, 1]; never 0, so every pixel has weight.
    """
    weights = np.ones(size, np.float32)
    ramp = min(ramp, size)
    if ramp > 0:
        # sin² over pixel centres: smooth, strictly positive, 1 where the ramp ends.
        up = np.sin(0.5 * np.pi * (np.arange(ramp) + 0.5) / ramp) ** 2
        if rise:
            weights[:ramp] *= up
        if fall:
            weights[size - ramp :] *= up[::-1]
    return weights


class Derainer:
    """Runs a deraining network on single images of any size.

    Args:
        net: a Keras model called as ``net(images, training=False)`` on float32
            ``[B, H, W, 3]`` in [-1, 1], returning the same shape in [-1, 1]
            (a :class:`~moss_tf.model.MOSSNet`).
        tile_size: images with both sides <= this go through whole; larger
            ones are split into tiles of this size. Default 512.
        overlap: minimum overlap of neighbouring tiles, and the length of the
            blending ramp, in pixels; less than ``tile_size / 2``. Default 64.

    Example::

        derainer = Derainer(net)
        clean_u8 = derainer.derain_uint8(read_image("rainy.jpg"))  # uint8 -> uint8
    """

    def __init__(
        self,
        net: keras.Model,
        tile_size: int = DEFAULT_TILE_SIZE,
        overlap: int = DEFAULT_OVERLAP,
    ):
        if tile_size < 16:
            raise MossError(f"tile size must be >= 16 pixels, got {tile_size}")
        if not 0 <= overlap < tile_size / 2:
            raise MossError(
                f"tile overlap must be in [0, tile_size / 2 = {tile_size / 2:g}), got {overlap}"
            )
        self.net = net
        self.tile_size = tile_size
        self.overlap = overlap
        # One graph for every image size (the network pads internally), so
        # test sets with many sizes do not retrace; ~1.5x faster than eager.
        self._forward = tf.function(
            self._forward_eager,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        )

    def _forward_eager(self, images):
        return self.net(images, training=False)

    def derain(
        self,
        rainy: np.ndarray | tf.Tensor,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Derain one image.

        Args:
            rainy: float ``[H, W, 3]`` in [-1, 1].
            on_tile: called as ``on_tile(done, total)`` after each tile
                (progress reporting). Default None.

        Returns:
            float32 NumPy ``[H, W, 3]`` in [-1, 1].
        """
        return self._derain(np.asarray(rainy, np.float32), lambda tile: tile, on_tile)

    def derain_uint8(
        self,
        rainy: np.ndarray,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Derain a uint8 ``[H, W, 3]`` image in [0, 255]; returns uint8, rounded.

        Only one tile at a time is held as floats on the way in, and the
        output is converted in bands of rows, so a large photo costs little
        beyond the two float accumulators.
        """
        out = self._derain(np.asarray(rainy), to_model_range, on_tile)
        result = np.empty(out.shape, np.uint8)
        for top in range(0, out.shape[0], self.tile_size):
            band = from_model_range(out[top : top + self.tile_size]).numpy()
            result[top : top + self.tile_size] = np.round(band * 255.0)
        return result

    def _derain(self, rainy, prepare, on_tile) -> np.ndarray:
        """Tiling and blending; ``prepare`` maps a slice of ``rainy`` to [-1, 1] float32."""
        if rainy.ndim != 3 or rainy.shape[-1] != 3:
            raise MossError(f"expected one RGB image [H, W, 3], got shape {rainy.shape}")
        height, width = rainy.shape[:2]
        rows = tile_starts(height, self.tile_size, self.overlap)
        cols = tile_starts(width, self.tile_size, self.overlap)
        if len(rows) == len(cols) == 1:
            out = self._forward(prepare(rainy)[None])[0].numpy()
            if on_tile is not None:
                on_tile(1, 1)
            return out

        tile_h, tile_w = min(height, self.tile_size), min(width, self.tile_size)
        total = np.zeros((height, width, 3), np.float32)
        weight_sum = np.zeros((height, width, 1), np.float32)
        done = 0
        for i, top in enumerate(rows):
            w_rows = blend_window(tile_h, self.overlap, i > 0, i < len(rows) - 1)
            for j, left in enumerate(cols):
                w_cols = blend_window(tile_w, self.overlap, j > 0, j < len(cols) - 1)
                weights = (w_rows[:, None] * w_cols[None, :])[..., None]
                window = (slice(top, top + tile_h), slice(left, left + tile_w))
                tile = self._forward(prepare(rainy[window])[None])[0].numpy()
                total[window] += tile * weights
                weight_sum[window] += weights
                done += 1
                if on_tile is not None:
                    on_tile(done, len(rows) * len(cols))
        total /= weight_sum
        return total


# ------------------------------------------------------------------------------ files


def save_like(derained: np.ndarray, source: str | Path, target: str | Path) -> Path:
    """Write a derained image in the format and layout of its source file.

    Rules (``derained`` is upright uint8 ``[H, W, 3]``, as :func:`read_image`
    returned the source):

    * the same format as the source: PNG, JPEG (quality 95; also for the
      "MPO" JPEGs many cameras write), TIFF, WebP (quality 95), BMP; other
      formats (GIF, ...) become PNG with a ``.png`` suffix;
    * the same displayed size and orientation: pixels are written upright and
      the EXIF orientation tag is reset to 1, the rest of the EXIF block and
      the ICC profile are kept;
    * grayscale sources give grayscale results; the source's alpha channel is
      put back where the format can hold it;
    * 16-bit sources are processed at 8 bits and saved at 8 bits.

    Returns:
        The path written (its suffix is ``.png`` when the format changed).
    """
    source, target = Path(source), Path(target)
    with Image.open(source) as original:
        fmt = _FORMAT_ALIASES.get(original.format, original.format)
        mode = original.mode
        icc = original.info.get("icc_profile")
        exif = original.getexif()
        has_alpha = "A" in mode or (mode == "P" and "transparency" in original.info)
        alpha = (
            ImageOps.exif_transpose(original).convert("RGBA").getchannel("A") if has_alpha else None
        )
    image = Image.fromarray(np.asarray(derained, np.uint8))
    if mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;16"):
        image = image.convert("L")
    if fmt not in _KEPT_FORMATS:
        fmt = "PNG"
        target = target.with_suffix(".png")
    if alpha is not None and fmt in _ALPHA_FORMATS:
        image.putalpha(alpha)

    options: dict = {}
    if icc and mode not in ("CMYK", "YCbCr", "LAB"):  # the profile must describe RGB/gray
        options["icc_profile"] = icc
    if exif:
        exif[_ORIENTATION_TAG] = 1
        options["exif"] = exif.tobytes()
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = _LOSSY_QUALITY
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format=fmt, **options)
    return target


def output_path(source: Path, input_root: Path, output_dir: Path) -> Path:
    """Where the result for ``source`` goes: the same file name under ``output_dir``."""
    relative = source.relative_to(input_root) if input_root.is_dir() else Path(source.name)
    return output_dir / relative


def derain_files(
    derainer: Derainer,
    input_path: str | Path,
    output_dir: str | Path,
    progress: bool = True,
) -> tuple[list[Path], list[str]]:
    """Derain a photo, or every photo directly inside a folder, into ``output_dir``.

    Each result keeps its file name and is written by :func:`save_like`.
    Unreadable files in a folder are reported and skipped; a single
    unreadable file raises.

    Args:
        derainer: the :class:`Derainer` to use.
        input_path: an image file or a folder of images.
        output_dir: created if missing; must not be the input folder.
        progress: show a progress bar (over tiles for one file, over files
            for a folder). Default True.

    Returns:
        ``(written paths, messages of skipped files)``.

    Raises:
        MossError: the input is missing or empty, or a result would overwrite
            its source; ImageError for a single unreadable file.
    """
    input_path, output_dir = Path(input_path), Path(output_dir)
    if not input_path.exists():
        raise MossError(f"{input_path}: not found")
    sources: Sequence[Path] = list_images(input_path) if input_path.is_dir() else [input_path]
    if not sources:
        raise MossError(f"{input_path}: no images found (looked for PNG, JPEG, BMP, TIFF, WebP)")

    written, skipped = [], []
    single = not input_path.is_dir()
    bar = (
        keras.utils.Progbar(None if single else len(sources))
        if progress and sys.stdout.isatty()
        else None
    )
    for index, source in enumerate(sources):
        target = output_path(source, input_path, output_dir)
        if target.resolve() == source.resolve():
            raise MossError(f"{target}: would overwrite the input; choose another --output folder")
        try:
            rainy = read_image(source)
        except ImageError as err:
            if single:
                raise
            skipped.append(str(err))
            continue

        def on_tile(done, total, bar=bar):
            if bar is not None and single:
                bar.target = total
                bar.update(done)

        written.append(save_like(derainer.derain_uint8(rainy, on_tile=on_tile), source, target))
        if bar is not None and not single:
            bar.update(index + 1)
    return written, skipped
