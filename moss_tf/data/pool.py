"""Decoded images held in memory, and loading them under the bad-image policy.

Training reads many random crops from few images, so every training image is
decoded once (in parallel threads; Pillow releases the GIL while decoding)
and kept as uint8 in one flat tensor. A tf.data map function then cuts a crop
with ``pool.get(i)`` and a slice: no file access and no Python per crop.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
import tensorflow as tf

from moss_tf.data.images import read_image
from moss_tf.data.layouts import Pair
from moss_tf.errors import DataError, ImageError

__all__ = ["ImagePool", "MemoryBudget", "load_images", "load_pairs"]

log = logging.getLogger("moss_tf.data")


class ImagePool:
    """uint8 images of different sizes in one flat tensor; ``get(i)`` returns image i.

    Args:
        arrays: uint8 arrays ``[H, W, C]`` in [0, 255] (C equal for all). The
            list is emptied while the images are copied, so that memory peaks
            near one copy of the data, not two.
    """

    def __init__(self, arrays: list[np.ndarray]):
        if not arrays:
            raise ValueError("ImagePool needs at least one image")
        self.count = len(arrays)
        self.channels = int(arrays[0].shape[-1])
        self.shapes_np = np.array([a.shape for a in arrays], dtype=np.int32)
        sizes = self.shapes_np.prod(axis=1, dtype=np.int64)
        offsets = np.zeros(self.count, dtype=np.int64)
        offsets[1:] = np.cumsum(sizes)[:-1]
        flat = np.empty(int(sizes.sum()), dtype=np.int8)
        for offset, size in zip(offsets, sizes, strict=True):
            flat[offset : offset + size] = arrays.pop(0).reshape(-1).view(np.int8)
        # tf.constant keeps a second copy of a uint8 array but takes an int8
        # buffer as it is; bitcast back to uint8 is free.
        self.flat = tf.bitcast(tf.constant(flat), tf.uint8)
        self.offsets = tf.constant(offsets)
        self.shapes = tf.constant(self.shapes_np)
        self.nbytes = int(flat.nbytes)

    def __len__(self) -> int:
        return self.count

    def get(self, index: tf.Tensor) -> tf.Tensor:
        """Image ``index`` as uint8 ``[H, W, C]`` in [0, 255] (usable inside tf.data)."""
        index = tf.cast(index, tf.int32)
        shape = self.shapes[index]
        size = tf.cast(tf.reduce_prod(shape), tf.int64)
        pixels = tf.slice(self.flat, [self.offsets[index]], [size])
        image = tf.reshape(pixels, shape)
        image.set_shape([None, None, self.channels])
        return image


class MemoryBudget:
    """Counts decoded bytes against ``data.memory_limit_mb`` with an actionable error.

    Every decoded image counts: a pair is two images (unless its clean image
    is shared with other pairs, as in DDN, where it is counted once).
    """

    def __init__(self, limit_mb: int):
        self.limit = limit_mb * 2**20
        self.used = 0
        self.images = 0

    def fits(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more still fit under the limit."""
        return self.used + nbytes <= self.limit

    def add(self, nbytes: int, what: str) -> None:
        self.used += nbytes
        self.images += 1
        if self.used > self.limit:
            raise DataError(
                f"{what}: the {self.images} training images decoded so far (clean and rainy "
                f"images counted separately) take {self.used / 2**20:,.0f} MiB, more than "
                f"data.memory_limit_mb={self.limit // 2**20}; set data.load=stream (or auto) "
                "to read the files as training needs them, lower data.max_side, or raise "
                "data.memory_limit_mb if the machine has the memory"
            )


def _decode_all(paths: Sequence[Path], max_side: int | None) -> Iterator[np.ndarray | ImageError]:
    """Decode in parallel threads; yields arrays or ImageErrors, in order.

    At most two images per thread are decoded ahead of the consumer, so a
    folder of huge photos never sits in memory at full size all at once.
    """

    def decode(path: Path) -> np.ndarray | ImageError:
        try:
            return read_image(path, max_side=max_side)
        except ImageError as err:
            return err

    workers = min(8, os.cpu_count() or 1)
    remaining = iter(paths)
    with ThreadPoolExecutor(max_workers=workers) as executor:
        pending = deque(executor.submit(decode, p) for p in islice(remaining, 2 * workers))
        while pending:
            result = pending.popleft().result()
            following = next(remaining, None)
            if following is not None:
                pending.append(executor.submit(decode, following))
            yield result


def _bad(problem: str, on_bad_image: str, skipped: list[str]) -> None:
    if on_bad_image == "error":
        raise ImageError(f"{problem} (set data.on_bad_image=skip to skip such files)")
    log.warning("skipped: %s", problem)
    skipped.append(problem)


def _summarise(skipped: list[str], total: int, what: str) -> None:
    if skipped:
        log.warning(
            "%s: skipped %d of %d file(s) (data.on_bad_image=skip)", what, len(skipped), total
        )


def _too_small(shape: tuple[int, ...], min_side: int) -> bool:
    return min(shape[0], shape[1]) < min_side


def load_images(
    paths: Sequence[Path],
    *,
    what: str,
    on_bad_image: str,
    max_side: int | None = None,
    min_side: int = 1,
    budget: MemoryBudget | None = None,
    gray: bool = False,
) -> tuple[list[np.ndarray], list[Path]]:
    """Decode ``paths`` to uint8 arrays, applying the bad-image policy.

    Args:
        what: the config key or folder, for messages.
        on_bad_image: ``error`` raises ImageError naming the first bad file;
            ``skip`` logs each one and a count.
        max_side: downscale images whose longer side is larger (see read_image).
        min_side: images whose shorter side (after downscaling) is smaller are bad.
        budget: memory accounting; None = unlimited.
        gray: keep one channel (the mean of R, G, B), for streak layers.

    Returns:
        (arrays ``[H, W, 3]`` or ``[H, W, 1]`` uint8 in [0, 255], their paths).
    """
    arrays, kept, skipped = [], [], []
    for path, result in zip(paths, _decode_all(paths, max_side), strict=True):
        if isinstance(result, ImageError):
            _bad(str(result), on_bad_image, skipped)
            continue
        if _too_small(result.shape, min_side):
            h, w = result.shape[:2]
            _bad(
                f"{path}: {w}x{h} is smaller than the {min_side}x{min_side} crop",
                on_bad_image,
                skipped,
            )
            continue
        if gray:
            result = np.round(result.mean(axis=-1, keepdims=True)).astype(np.uint8)
        if budget is not None:
            budget.add(result.nbytes, what)
        arrays.append(result)
        kept.append(path)
    _summarise(skipped, len(paths), what)
    if not arrays:
        raise DataError(f"{what}: no usable images ({len(skipped)} skipped)")
    return arrays, kept


def load_pairs(
    pairs: Sequence[Pair],
    *,
    what: str,
    on_bad_image: str,
    max_side: int | None = None,
    min_side: int = 1,
    budget: MemoryBudget | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[int], list[Pair]]:
    """Decode rainy and clean images of ``pairs``; a pair with different sizes is bad.

    Sizes are compared at full resolution, then both images are downscaled
    alike. A clean image shared by several pairs (DDN: 14 rainy images per
    clean one) is decoded and stored once.

    Returns:
        (rainy arrays, distinct clean arrays, for each rainy array the index of
        its clean array, kept pairs); arrays are uint8 ``[H, W, 3]`` in [0, 255].
    """
    # Distinct clean images first: their full-size shape (to compare) and the
    # stored, possibly downscaled array. Only what is kept stays in memory.
    clean_paths = list(dict.fromkeys(p.clean for p in pairs))
    clean_shape: dict[Path, tuple[int, ...]] = {}
    clean_slot: dict[Path, int] = {}
    clean_error: dict[Path, ImageError] = {}
    clean_arrays: list[np.ndarray] = []
    for path, clean in zip(clean_paths, _decode_all(clean_paths, None), strict=True):
        if isinstance(clean, ImageError):
            clean_error[path] = clean
            continue
        clean_shape[path] = clean.shape
        if max_side is not None and max(clean.shape[:2]) > max_side:
            clean = _downscale(clean, max_side)
        clean_slot[path] = len(clean_arrays)
        clean_arrays.append(clean)
        if budget is not None:
            budget.add(clean.nbytes, what)

    rainy_arrays, clean_index, kept, skipped = [], [], [], []
    rainy_results = _decode_all([p.rainy for p in pairs], None)
    for pair, rainy in zip(pairs, rainy_results, strict=True):
        bad = rainy if isinstance(rainy, ImageError) else clean_error.get(pair.clean)
        if bad is not None:
            _bad(str(bad), on_bad_image, skipped)
            continue
        if rainy.shape != clean_shape[pair.clean]:
            h, w = clean_shape[pair.clean][:2]
            _bad(
                f"{pair.rainy} is {rainy.shape[1]}x{rainy.shape[0]} but its clean partner "
                f"{pair.clean} is {w}x{h}",
                on_bad_image,
                skipped,
            )
            continue
        if max_side is not None and max(rainy.shape[:2]) > max_side:
            rainy = _downscale(rainy, max_side)
        if _too_small(rainy.shape, min_side):
            h, w = rainy.shape[:2]
            _bad(
                f"{pair.rainy}: {w}x{h} is smaller than the {min_side}x{min_side} crop",
                on_bad_image,
                skipped,
            )
            continue
        if budget is not None:
            budget.add(rainy.nbytes, what)
        rainy_arrays.append(rainy)
        clean_index.append(clean_slot[pair.clean])
        kept.append(pair)
    _summarise(skipped, len(pairs), what)
    if not kept:
        raise DataError(f"{what}: no usable pairs ({len(skipped)} skipped)")
    return rainy_arrays, clean_arrays, clean_index, kept


def _downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Area-downscale uint8 ``[H, W, 3]`` so the longer side is ``max_side``."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    resized = tf.image.resize(image, size, method="area")
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)
