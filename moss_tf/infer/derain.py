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

import dataclasses
import itertools
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from moss_tf.data import ImageError, from_model_range, list_images, read_image, to_model_range
from moss_tf.errors import MossError
from moss_tf.files import check_output_folder, writes_one_file

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE_SIZE",
    "Derainer",
    "blend_window",
    "derain_files",
    "output_path",
    "owned_ranges",
    "owned_statistics",
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
# A TIFF's EXIF block, as Pillow reads it, is its tag directory, which also
# describes its pixels (size, bits, sample format, strips, compression...).
# Copied onto a result of another layout (an 8-bit copy of a 16-bit or float
# TIFF) they make it unreadable: these are left to the writer.
_TIFF_LAYOUT_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 338, 339, 340, 341)


def tile_starts(length: int, tile_size: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles covering ``[0, length)`` with at least ``overlap`` shared pixels.

    The tiles are spread evenly, the first at 0 and the last ending at
    ``length``; a side shorter than ``tile_size`` gets one tile. Every start
    is a multiple of ``multiple`` (``length`` and ``tile_size`` must be too),
    so tiles line up with the network's feature grid.

    Example:
        >>> tile_starts(1000, 512, 64)
        [0, 244, 488]
        >>> tile_starts(1000, 512, 64, multiple=8)
        [0, 248, 488]
    """
    if length <= tile_size:
        return [0]
    if length % multiple or tile_size % multiple:
        raise ValueError(f"length {length}, tile size {tile_size}: not multiples of {multiple}")
    length, tile_size = length // multiple, tile_size // multiple
    overlap = math.ceil(overlap / multiple)
    count = 1 + math.ceil((length - tile_size) / (tile_size - overlap))
    step = (length - tile_size) / (count - 1)
    # Rounded to whole units, neighbours stay within tile_size - overlap units.
    return [multiple * math.floor(i * step + 0.5) for i in range(count)]


def owned_ranges(starts: Sequence[int], tile_size: int, length: int, multiple: int) -> list:
    """The part of ``[0, length)`` each tile owns: ``(begin, end)`` in the tile's coordinates.

    Neighbouring tiles split their overlap at its middle (rounded to a
    multiple of ``multiple``), so the owned parts cover every position
    exactly once and each lies as far as possible from its tile's borders.
    """
    bounds = [0]
    for before, start in itertools.pairwise(starts):
        middle = (start + before + tile_size) / 2
        bounds.append(multiple * math.floor(middle / multiple + 0.5))
    bounds.append(length)
    return [
        (begin - s, end - s)
        for s, (begin, end) in zip(starts, itertools.pairwise(bounds), strict=True)
    ]


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


def owned_statistics(net: keras.Model, tile, owned):
    """Eq. (3) sums ``[1, K, C]`` and counts ``[1, K]`` of the feature cells of ``tile``
    inside ``owned`` = (top, bottom, left, right), pixels in tile coordinates.

    The first pass of tiled inference, for one tile ``[1, h, w, 3]`` in [-1, 1]
    whose sides are multiples of ``net.size_multiple``; the sums and counts of
    a photo's tiles add up to the photo's (see :class:`Derainer`).
    """
    _, features = net.encode(tile)
    top, bottom, left, right = tf.unstack(owned // net.size_multiple)
    cells = features[-1][:, top:bottom, left:right, :]
    vectors = tf.reshape(tf.cast(cells, tf.float32), [1, -1, tf.shape(cells)[-1]])
    return net.memory.assignment_statistics(vectors)


class Derainer:
    """Runs a deraining network on single images of any size.

    Every image gets the network's output for the whole image, as closely as
    tiling allows. Images whose sides fit in ``tile_size`` go through whole.
    Larger ones are reflect-padded to multiples of the network's size
    multiple (as the network pads internally) and cut into overlapping tiles
    aligned with its feature grid. When the memory updates at inference
    (``inference_memory`` ``per_image`` or ``batch``: one photo is a batch of
    one), the update must be the whole photo's, not each tile's, so there are
    two passes:

    1. each tile goes through the encoder, and the Eq. (3) sums and counts of
       the feature cells it *owns* are added up: neighbouring tiles split
       their overlap at its middle, so every cell of the whole image's
       feature grid (padding included, exactly as the whole-image pass sees
       it) counts once and only once, and no tile's own border or padding
       counts. From the totals comes the photo's updated memory;
    2. each tile goes through the network reading that memory
       (:meth:`~moss_tf.nn.network.MOSSNet.call_with_memory`), and the outputs
       are blended.

    What differs from the whole-image pass is only near tile borders, where
    a tile lacks context the whole image has: features there (and so a few
    memory assignments) change slightly, and the blending window gives these
    pixels little weight (see the module docstring). With a ``frozen``
    memory one pass suffices.

    Args:
        net: a :class:`~moss_tf.nn.network.MOSSNet` (images in [-1, 1]).
        tile_size: images with both sides <= this go through whole; larger
            ones are split into tiles of this size; a multiple of the
            network's size multiple (8 for the released network). Default 512.
        overlap: minimum overlap of neighbouring tiles, and the length of the
            blending ramp, in pixels; less than ``tile_size / 2``. Default 64.

    Example::

        derainer = Derainer(net)                      # or Derainer.from_preset("moss_release")
        clean_u8 = derainer.derain("rainy.jpg")       # a path, PIL image or uint8 array
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
        if tile_size % net.size_multiple:
            raise MossError(
                f"tile size must be a multiple of {net.size_multiple} (the network's "
                f"resolution steps), got {tile_size}"
            )
        self.net = net
        self.tile_size = tile_size
        self.overlap = overlap
        # One graph for every image size (the network pads internally), so
        # test sets with many sizes do not retrace; ~1.5x faster than eager.
        images = tf.TensorSpec([None, None, None, 3], tf.float32)
        self._forward = tf.function(self._forward_eager, input_signature=[images])
        self._owned_statistics = tf.function(
            self._owned_statistics_eager,
            input_signature=[images, tf.TensorSpec([4], tf.int32)],
        )
        self._forward_with_memory = tf.function(
            net.call_with_memory,
            input_signature=[images, tf.TensorSpec([1, None, None], tf.float32)],
        )

    @property
    def min_side(self) -> int:
        """The shortest side, in pixels, an image may have: the network's size multiple.

        The network reflect-pads an image to a multiple of it, which fails for
        a side of half of it or less; a shorter image is refused by name.
        """
        return self.net.size_multiple

    def size_problem(self, height: int, width: int) -> str | None:
        """Why a ``height x width`` image cannot be derained, or None when it can."""
        if min(height, width) >= self.min_side:
            return None
        side = self.min_side
        return f"{width}x{height} pixels is too small to derain (at least {side}x{side} needed)"

    @property
    def two_pass(self) -> bool:
        """Whether tiled images need the first pass (the memory updates at inference)."""
        return bool(self.net.use_memory and self.net.memory.updates_at_inference)

    def _forward_eager(self, images):
        return self.net(images, training=False)

    def _owned_statistics_eager(self, tile, owned):
        return owned_statistics(self.net, tile, owned)

    @classmethod
    def from_preset(cls, preset: str | Path = "moss_release", **kwargs) -> Derainer:
        """A Derainer of a shipped preset (by name) or a preset folder (by path).

        ``kwargs`` go to the constructor (``tile_size``, ``overlap``)::

            derained = Derainer.from_preset("moss_release").derain("rainy.jpg")
        """
        from moss_tf.nn.network import MOSSNet

        return cls(MOSSNet.from_preset(preset), **kwargs)

    def derain(self, image: str | Path | Image.Image | np.ndarray) -> np.ndarray:
        """Derain one photo of any size, as the command line does.

        Args:
            image: a file path (read as the command line reads it: EXIF
                orientation applied, 16-bit scaled, alpha dropped), a PIL image,
                or a uint8 ``[H, W, 3]`` (or ``[H, W]`` grey) array.

        Returns:
            uint8 ``[H, W, 3]``: the derained photo.
        """
        if isinstance(image, (str, Path)):
            image = read_image(image)
        elif isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise MossError(f"derain: expected a uint8 image, got {image.dtype} (scale to 0-255)")
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise MossError(f"derain: expected an [H, W, 3] image, got shape {image.shape}")
        return self.derain_uint8(image)

    def derain_model_range(
        self,
        rainy: np.ndarray | tf.Tensor,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Derain one image in the model's range.

        Args:
            rainy: float ``[H, W, 3]`` in [-1, 1].
            on_tile: called as ``on_tile(done, total)`` after each tile of
                each pass (progress reporting). Default None.

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
        """Whole or tiled; ``prepare`` maps a slice of ``rainy`` to [-1, 1] float32."""
        if rainy.ndim != 3 or rainy.shape[-1] != 3:
            raise MossError(f"expected one RGB image [H, W, 3], got shape {rainy.shape}")
        height, width = rainy.shape[:2]
        problem = self.size_problem(height, width)
        if problem:
            raise MossError(problem)
        if max(height, width) <= self.tile_size:
            out = self._forward(prepare(rainy)[None])[0].numpy()
            if on_tile is not None:
                on_tile(1, 1)
            return out
        multiple = self.net.size_multiple
        padding = [(0, -height % multiple), (0, -width % multiple), (0, 0)]
        padded = np.pad(rainy, padding, mode="reflect") if padding[0][1] or padding[1][1] else rainy
        tiles = self._tiles(*padded.shape[:2])
        progress = _Progress(on_tile, len(tiles) * (2 if self.two_pass else 1))
        items = self._photo_memory(padded, tiles, prepare, progress) if self.two_pass else None
        return self._blend(padded, tiles, prepare, items, progress)[:height, :width]

    def _tiles(self, height: int, width: int) -> list[_Tile]:
        """The tiles of a padded ``height x width`` image, row by row."""
        size, multiple = self.tile_size, self.net.size_multiple
        tile_h, tile_w = min(height, size), min(width, size)
        rows = tile_starts(height, size, self.overlap, multiple)
        cols = tile_starts(width, size, self.overlap, multiple)
        owned_rows = owned_ranges(rows, tile_h, height, multiple)
        owned_cols = owned_ranges(cols, tile_w, width, multiple)
        tiles = []
        for i, (top, own_rows) in enumerate(zip(rows, owned_rows, strict=True)):
            for j, (left, own_cols) in enumerate(zip(cols, owned_cols, strict=True)):
                window = (slice(top, top + tile_h), slice(left, left + tile_w))
                edges = (i > 0, i < len(rows) - 1, j > 0, j < len(cols) - 1)
                tiles.append(_Tile(window, (*own_rows, *own_cols), edges))
        return tiles

    def _photo_memory(self, padded, tiles, prepare, progress) -> tf.Tensor:
        """First pass: the memory ``[1, K, C]`` updated with the whole photo's statistics."""
        sums = counts = 0.0
        for tile in tiles:
            images = prepare(padded[tile.window])[None]
            tile_sums, tile_counts = self._owned_statistics(images, tf.constant(tile.owned))
            sums = sums + tile_sums.numpy().astype(np.float64)
            counts = counts + tile_counts.numpy().astype(np.float64)
            progress.step()
        memory = self.net.memory
        return memory.items_from_statistics(
            tf.constant(sums, tf.float32), tf.constant(counts, tf.float32)
        )

    def _blend(self, padded, tiles, prepare, items, progress) -> np.ndarray:
        """Second (or only) pass: every tile through the network, outputs blended."""
        total = np.zeros(padded.shape, np.float32)
        weight_sum = np.zeros((*padded.shape[:2], 1), np.float32)
        for tile in tiles:
            rows, cols = tile.window
            rise_y, fall_y, rise_x, fall_x = tile.edges
            w_rows = blend_window(rows.stop - rows.start, self.overlap, rise_y, fall_y)
            w_cols = blend_window(cols.stop - cols.start, self.overlap, rise_x, fall_x)
            weights = (w_rows[:, None] * w_cols[None, :])[..., None]
            images = prepare(padded[tile.window])[None]
            if items is None:
                out = self._forward(images)
            else:
                out = self._forward_with_memory(images, items)
            total[tile.window] += out[0].numpy() * weights
            weight_sum[tile.window] += weights
            progress.step()
        total /= weight_sum
        return total


@dataclasses.dataclass(frozen=True)
class _Tile:
    """One tile: its ``window`` (row and column slices of the padded image), the
    part it ``owned`` for the memory update (top, bottom, left, right in tile
    pixels) and which ``edges`` (top, bottom, left, right) have a neighbour."""

    window: tuple[slice, slice]
    owned: tuple[int, int, int, int]
    edges: tuple[bool, bool, bool, bool]


class _Progress:
    """Calls ``on_tile(done, total)`` after each tile of each pass."""

    def __init__(self, on_tile, total: int):
        self.on_tile, self.total, self.done = on_tile, total, 0

    def step(self):
        self.done += 1
        if self.on_tile is not None:
            self.on_tile(self.done, self.total)


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
    # A file name of another format (`--output derained.png` for a JPEG) names the format.
    fmt = Image.registered_extensions().get(target.suffix.lower(), fmt)
    fmt = _FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in _KEPT_FORMATS:
        fmt = "PNG"
        target = target.with_suffix(".png")
    if alpha is not None and fmt in _ALPHA_FORMATS:
        image.putalpha(alpha)

    options: dict = {}
    if icc and mode not in ("CMYK", "YCbCr", "LAB"):  # the profile must describe RGB/gray
        options["icc_profile"] = icc
    if fmt == "TIFF":
        for tag in _TIFF_LAYOUT_TAGS:  # the result's own layout, not the source's
            exif.pop(tag, None)
    if exif:
        exif[_ORIENTATION_TAG] = 1
        options["exif"] = exif.tobytes()
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = _LOSSY_QUALITY
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside, then renamed: a failure (a full disk) leaves no half file.
    partial = target.with_name(f".{target.name}.partial")
    try:
        image.save(partial, format=fmt, **options)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def output_path(source: Path, input_root: Path, output_dir: Path) -> Path:
    """Where the result for ``source`` goes: the same file name under ``output_dir``.

    For a single photo, an ``output_dir`` that ends like an image file
    (``derained.png``) and is not an existing folder is the file itself.
    """
    if writes_one_file(input_root, output_dir):
        return output_dir
    relative = source.relative_to(input_root) if input_root.is_dir() else Path(source.name)
    return output_dir / relative


def derain_files(
    derainer: Derainer,
    input_path: str | Path,
    output_dir: str | Path,
    progress: bool = True,
    max_pixels: int | None = None,
) -> tuple[list[Path], list[str]]:
    """Derain a photo, or every photo directly inside a folder, into ``output_dir``.

    Each result keeps its file name and is written by :func:`save_like`.
    In a folder, a file that cannot be derained (unreadable, truncated, over
    the pixel limit, smaller than :attr:`Derainer.min_side` on a side, or too
    large for the memory) is reported and skipped, and the others are
    written; a single such file raises. ``output_dir`` is checked before any
    image is read: it must be (or be creatable as) a writable folder other
    than the input folder.

    Args:
        derainer: the :class:`Derainer` to use.
        input_path: an image file or a folder of images.
        output_dir: created if missing; must not be the input folder.
        progress: show a progress bar (over tiles for one file, over files
            for a folder). Default True.
        max_pixels: refuse images with more pixels (default: the limit in
            force, :data:`moss_tf.data.images.MAX_PIXELS` unless set).

    Returns:
        ``(written paths, messages of skipped files)``.

    Raises:
        MossError: the input is missing or empty, ``output_dir`` is unusable,
            or a result cannot be written (the results written so far stay);
            ImageError for a single unreadable file.
    """
    input_path, output_dir = Path(input_path), Path(output_dir)
    sources = _photos(input_path)
    check_output_folder(output_dir, input_path)
    single = not input_path.is_dir()
    bar = (
        keras.utils.Progbar(None if single else len(sources))
        if progress and sys.stdout.isatty()
        else None
    )

    def on_tile(done, total):
        if bar is not None and single:
            bar.target = total
            bar.update(done)

    written, skipped = [], []
    for index, source in enumerate(sources):
        target = output_path(source, input_path, output_dir)
        if target.resolve() == source.resolve():
            raise MossError(f"{target}: would overwrite the input; choose another --output")
        try:
            derained = _derain_file(derainer, source, on_tile, max_pixels)
        except MossError as err:
            if single:
                raise
            skipped.append(str(err))
            continue
        written.append(_save(derained, source, target, written))
        if bar is not None and not single:
            bar.update(index + 1)
    return written, skipped


def _photos(input_path: Path) -> list[Path]:
    """The photo, or the photos of the folder, ``input_path`` names."""
    if not input_path.exists():
        raise MossError(f"{input_path}: not found")
    sources = list_images(input_path) if input_path.is_dir() else [input_path]
    if not sources:
        raise MossError(f"{input_path}: no images found (looked for PNG, JPEG, BMP, TIFF, WebP)")
    return sources


def _derain_file(derainer: Derainer, source: Path, on_tile, max_pixels: int | None) -> np.ndarray:
    """The derained uint8 image of ``source``; MossError (naming it) when it cannot be."""
    rainy = read_image(source, max_pixels=max_pixels)
    problem = derainer.size_problem(*rainy.shape[:2])
    if problem:
        raise ImageError(f"{source}: {problem}")
    try:
        return derainer.derain_uint8(rainy, on_tile=on_tile)
    except (tf.errors.ResourceExhaustedError, MemoryError):
        height, width = rainy.shape[:2]
        raise MossError(
            f"{source}: not enough memory to derain {width}x{height} pixels "
            f"(a smaller --tile-size than {derainer.tile_size} needs less)"
        ) from None


def _save(derained: np.ndarray, source: Path, target: Path, written: list[Path]) -> Path:
    """:func:`save_like`, with a failure to write (a full disk...) named as a MossError."""
    try:
        return save_like(derained, source, target)
    except OSError as err:
        kept = f"; the {len(written)} result(s) written before it are kept" if written else ""
        raise MossError(f"{target}: cannot write ({err.strerror or err}){kept}") from None
