"""Every image of a study goes out the same way: PNG re-encoded from decoded RGB pixels.

The methods' own files differ in format (PNG, JPEG, WebP...), metadata (EXIF,
text chunks, colour profiles) and encoder, and each of these would tell an
evaluator which method is behind a label. So no file is served as it is: it
is decoded, turned upright (EXIF orientation, as browsers show it), converted
to sRGB when it carries a colour profile, flattened onto white when it has
transparency (the page is white), and written as a fresh PNG with no
metadata. PNG is lossless, so the pixels evaluators judge are the decoded
pixels of the method's file.

Encoded images are kept in a small in-memory cache bounded in bytes.

Example::

    cache = EncodedImages(max_bytes=64 << 20)
    png = cache.get(Path("out/moss/rain_01.jpg"))  # bytes of a PNG
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from moss_tf.study.study import StudyError

__all__ = ["EncodedImages", "check_image", "encode_png"]

PNG_MIMETYPE = "image/png"


def check_image(path: Path) -> None:
    """Raise StudyError naming ``path`` unless its header reads as an image (cheap)."""
    try:
        with Image.open(path):
            pass  # opening parses the header
    except (OSError, UnidentifiedImageError) as error:
        raise StudyError(f"{path} is not a readable image: {error}") from error


def encode_png(path: Path) -> bytes:
    """The image at ``path`` as PNG bytes of its upright sRGB pixels, without metadata."""
    try:
        with Image.open(path) as image:
            pixels = _srgb_pixels(image)
    except (OSError, UnidentifiedImageError) as error:
        raise StudyError(f"{path} is not a readable image: {error}") from error
    # A new image from the bare array: no info dict, so no profile, EXIF or text chunk.
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG", compress_level=6)
    return out.getvalue()


def _srgb_pixels(image: Image.Image) -> np.ndarray:
    """uint8 (height, width, 3) pixels as a browser would show them on a white page."""
    image = ImageOps.exif_transpose(image)
    profile = image.info.get("icc_profile")
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit greyscale -> 8-bit
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    mode = "RGBA" if has_alpha else "RGB"
    if image.mode not in (mode, "CMYK"):  # CMYK only converts well through its profile
        image = image.convert(mode)
    if profile:
        image = _to_srgb(image, profile, mode)
    image = image.convert(mode)
    if has_alpha:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image).convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _to_srgb(image: Image.Image, profile: bytes, mode: str) -> Image.Image:
    """Convert from the embedded colour profile to sRGB; unchanged if the profile is unusable."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        target = ImageCms.createProfile("sRGB")
        return ImageCms.profileToProfile(image, source, target, outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image  # a browser would also fall back to treating it as sRGB


class EncodedImages:
    """Thread-safe cache of :func:`encode_png` results, least recently used dropped first.

    Args:
        max_bytes: the most PNG bytes kept (default 256 MiB); an image larger
            than that is encoded on every request.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._cache: OrderedDict[Path, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: Path) -> bytes:
        with self._lock:
            if path in self._cache:
                self._cache.move_to_end(path)
                return self._cache[path]
        data = encode_png(path)  # outside the lock: other images keep flowing
        with self._lock:
            if path not in self._cache and len(data) <= self.max_bytes:
                self._cache[path] = data
                self._bytes += len(data)
                while self._bytes > self.max_bytes:
                    _, dropped = self._cache.popitem(last=False)
                    self._bytes -= len(dropped)
        return data

    @property
    def size_bytes(self) -> int:
        """PNG bytes held now."""
        with self._lock:
            return self._bytes
