"""Score any method's derained images against clean references, in both conventions.

Files are paired by name without the ending (``1.png`` scores against
``1.jpg``), so the outputs of another method's code can be scored as they
are. Both sides are uint8 files: unlike :func:`~moss_tf.infer.metrics.image_metrics`
on network outputs, nothing is truncated or rounded (no TensorFlow needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moss_tf.data.images import list_images, read_image
from moss_tf.errors import DataError
from moss_tf.infer.metrics import METRIC_KEYS, psnr_rgb, psnr_y, ssim_rgb, ssim_y

__all__ = ["pair_files", "score_folders"]

_METRICS = {"psnr_rgb": psnr_rgb, "ssim_rgb": ssim_rgb, "psnr_y": psnr_y, "ssim_y": ssim_y}


def pair_files(derained_dir: str | Path, clean_dir: str | Path) -> list[tuple[Path, Path]]:
    """``(derained, clean)`` paths paired by file stem, in natural order.

    Raises:
        DataError: a folder is missing or empty, no names match, or two files
            of one folder share a stem.
    """
    derained = _by_stem(derained_dir)
    clean = _by_stem(clean_dir)
    pairs = [(derained[stem], clean[stem]) for stem in derained if stem in clean]
    if not pairs:
        raise DataError(
            f"{derained_dir} and {clean_dir}: no file names in common "
            f"(e.g. {next(iter(derained))!r} vs {next(iter(clean))!r})"
        )
    return pairs


def _by_stem(folder: str | Path) -> dict[str, Path]:
    files = list_images(folder)
    if not files:
        raise DataError(f"{folder}: no images found")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise DataError(f"{folder}: {stems[path.stem].name} and {path.name} share a name")
        stems[path.stem] = path
    return stems


def score_folders(derained_dir: str | Path, clean_dir: str | Path) -> dict:
    """Mean PSNR/SSIM of the paired files, and per image.

    Returns:
        ``{"n", "unpaired", "psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y", "images"}``;
        ``images`` maps each derained file name to its four numbers.

    Raises:
        DataError: no pairs, or a pair whose sizes differ (naming both files).
    """
    pairs = pair_files(derained_dir, clean_dir)
    per_image = {}
    for derained_path, clean_path in pairs:
        derained, clean = read_image(derained_path), read_image(clean_path)
        if derained.shape != clean.shape:
            raise DataError(
                f"{derained_path} is {derained.shape[1]}x{derained.shape[0]} but "
                f"{clean_path} is {clean.shape[1]}x{clean.shape[0]}"
            )
        per_image[derained_path.name] = {
            key: float(_METRICS[key](derained, clean)) for key in METRIC_KEYS
        }
    means = {key: float(np.mean([s[key] for s in per_image.values()])) for key in METRIC_KEYS}
    unpaired = len(list_images(derained_dir)) - len(pairs)
    return {"n": len(pairs), "unpaired": unpaired, **means, "images": per_image}
