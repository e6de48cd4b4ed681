"""Reading image files as they come from real folders.

Every image the project reads goes through :func:`read_image`, so a rainy
photo, a clean target and a streak layer are decoded the same way: RGB uint8
in [0, 255], EXIF orientation applied, exotic modes normalised (see the
docstring for the exact rules). Problems raise :class:`ImageError` naming the
file, never a bare Pillow traceback.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from moss_tf.data.shard_files import ShardMember
from moss_tf.errors import DataError, ImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "list_images",
    "natural_key",
    "pixel_limit",
    "pixel_limit_of",
    "read_image",
    "too_many_pixels",
]

#: File name endings treated as images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: The default pixel limit: images with more pixels are refused from their
#: header alone, before any pixel is decoded (a 20 kB PNG can declare 13,300^2
#: pixels and take gigabytes and minutes to decode). 8192 x 8192, 67.1
#: million pixels: every camera's full-size photo passes (phones 12-50 MP,
#: full-frame bodies up to 61 MP) and a 100 MP medium-format photo or a stitched
#: panorama is refused. At the limit, decoding takes 0.2 GB and deraining
#: (:class:`~moss_tf.infer.derain.Derainer`, 512 px tiles, full-size float32
#: blend) peaked at 2.2 GB for the whole process with a small network, 29 s on
#: 2 CPU cores; the released network adds its tile activations.
#: ``evaluate.py --max-pixels`` and the config key ``data.max_pixels`` change
#: it (:func:`pixel_limit`); this is the one limit enforced (Pillow's own
#: decompression-bomb limit is raised to never refuse an image under it).
MAX_PIXELS = 8192 * 8192

_limit: int | None = None  # set by pixel_limit(); None: MAX_PIXELS

_BACKGROUND = 255  # transparent pixels become white, as an image viewer shows them


def pixel_limit_of() -> int:
    """The pixel limit in force: :data:`MAX_PIXELS` unless :func:`pixel_limit` set another."""
    return MAX_PIXELS if _limit is None else _limit


@contextlib.contextmanager
def pixel_limit(pixels: int | None) -> Iterator[int]:
    """Within the block, images with more than ``pixels`` pixels are refused (None: unchanged).

    The limit is the process's, for every thread (the parallel decoders
    included), and is restored on leaving. Yields the limit in force.
    """
    global _limit
    previous = _limit
    if pixels is not None:
        _limit = int(pixels)
        _let_pillow_open(_limit)
    try:
        yield pixel_limit_of()
    finally:
        _limit = previous


def too_many_pixels(path, width: int, height: int, limit: int) -> str:
    """The message for an image over the pixel ``limit``."""
    return (
        f"{path}: {width}x{height} is {width * height:,} pixels, more than the limit of "
        f"{limit:,}; refused unread as a possible decompression "
        "bomb (raise the limit with --max-pixels or data.max_pixels if the image is genuine)"
    )


def _let_pillow_open(limit: int) -> None:
    """Raise Pillow's bomb limit (it refuses over twice that) to never refuse under ``limit``."""
    pillow = Image.MAX_IMAGE_PIXELS
    if pillow is not None and 2 * pillow < limit:
        Image.MAX_IMAGE_PIXELS = math.ceil(limit / 2)


def natural_key(path: str | Path) -> list:
    """Sort key that orders ``rain-2.png`` before ``rain-10.png``."""
    name = Path(path).name.lower()
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``, in natural order.

    Files are recognised by their ending (:data:`IMAGE_EXTENSIONS`); hidden
    files such as macOS ``._name.png`` resource forks are ignored. Sub-folders
    are not searched.

    Raises:
        DataError: ``folder`` does not exist or is not a folder.

    Example::

        for path in list_images("my_rainy_photos"):
            image = read_image(path)  # uint8 [H, W, 3] in [0, 255]
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder" if folder.exists() else f"{folder}: not found")
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        ),
        key=natural_key,
    )


def _source(path: Path | ShardMember) -> Path | io.BytesIO:
    """What Pillow opens: the file, or the bytes of a file stored in a shard."""
    if isinstance(path, ShardMember):
        if path.length == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
        return io.BytesIO(path.read_bytes())
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    return path


def _open(path: Path | ShardMember, max_pixels: int | None = None) -> Image.Image:
    """Open ``path`` lazily (header only) with a clear error for non-images."""
    source = _source(path)
    limit = pixel_limit_of() if max_pixels is None else max_pixels
    _let_pillow_open(limit)
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError as err:  # only above our limit (see pixel_limit)
        size = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(size.group(1)):,} pixels" if size else "too many pixels"
        raise ImageError(f"{path}: {pixels}, more than the limit of {limit:,}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except OSError as err:
        raise ImageError(f"{path}: cannot open ({err})") from None
    width, height = image.size
    if width * height > limit:
        image.close()
        raise ImageError(too_many_pixels(path, width, height, limit))
    return image


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Normalise any Pillow mode to RGB uint8 [H, W, 3] in [0, 255]."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale (PNG/TIFF); 32-bit integer images are read as 16-bit too.
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        # Floating-point TIFFs are taken to hold [0, 1] values; NaN is read as 0.
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        gray = np.clip(np.round(np.clip(values, 0.0, 1.0) * 255.0), 0, 255)
        return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * alpha + _BACKGROUND * (1.0 - alpha)
        return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX
    return np.asarray(image, dtype=np.uint8)


def read_image(
    path: str | Path | ShardMember, max_side: int | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode one image file to RGB uint8 ``[H, W, 3]`` in [0, 255].

    Formats: PNG, JPEG, BMP, TIFF, WebP (anything Pillow reads). ``path`` may
    also be a file stored in a shard folder (its original bytes). Rules:

    * EXIF orientation is applied, so the array is upright as a viewer shows it.
    * Grayscale and palette images are expanded to three equal channels.
    * 16-bit images are scaled to 8 bits (``round(v / 257)``); float TIFFs are
      taken to hold [0, 1] values (NaN is read as 0).
    * Transparency (RGBA, LA, palette with a transparent colour) is
      composited over white, which is what an image viewer shows.
    * Multi-frame files (GIF, multi-page TIFF) give their first frame.
    * ``max_side``: when set and the longer side exceeds it, the image is
      downscaled (area-averaging) so its longer side equals ``max_side``.
      JPEGs are then decoded at reduced resolution, so a 40-megapixel photo
      never occupies full-size memory. Default ``None`` keeps the full size.
    * ``max_pixels``: images with more pixels are refused from their header,
      unread. Default ``None``: the limit in force (:func:`pixel_limit`,
      :data:`MAX_PIXELS` unless set); a server passes its own per call.

    Raises:
        ImageError: naming ``path``, for a missing, empty, truncated or
            unreadable file, or one with more pixels than the limit in force
            (:func:`pixel_limit`, default :data:`MAX_PIXELS`).

    Example::

        rainy = read_image("rain/input1.png")  # uint8 [H, W, 3] in [0, 255]
    """
    path = path if isinstance(path, ShardMember) else Path(path)
    with _open(path, max_pixels) as image:
        try:
            if max_side is not None and max(image.size) > max_side:
                scale = max_side / max(image.size)
                target = (
                    max(1, round(image.size[0] * scale)),
                    max(1, round(image.size[1] * scale)),
                )
                # draft() lets the JPEG decoder skip detail (1/2, 1/4, 1/8 scale)
                # before the exact resize; a no-op for other formats.
                image.draft("RGB", target)
                image.load()
                image = ImageOps.exif_transpose(image)
                if image.size != target and max(image.size) > max_side:
                    scale = max_side / max(image.size)
                    target = (
                        max(1, round(image.size[0] * scale)),
                        max(1, round(image.size[1] * scale)),
                    )
                    if image.mode in ("P", "1"):
                        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                    image = image.resize(target, Image.Resampling.BOX)
            else:
                image.load()
                image = ImageOps.exif_transpose(image)
            array = _to_rgb_uint8(image)
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            # Pillow reports truncated data as OSError("image file is truncated ...").
            raise ImageError(f"{path}: cannot decode ({err})") from None
    if array.ndim != 3 or array.shape[-1] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{path}: decoded to an unusable array of shape {array.shape}")
    return np.ascontiguousarray(array)
