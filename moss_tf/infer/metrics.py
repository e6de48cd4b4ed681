"""PSNR and SSIM in the two conventions deraining papers report (docs/method.md §4).

Every metric here takes **uint8 images in [0, 255]**, shaped ``[H, W, 3]`` or
``[B, H, W, 3]``, and returns float64 (a float for one image, an array of
``B`` values for a batch). Turn network values into uint8 with
:func:`to_uint8` first; that is where the rounding convention is chosen.

Paper convention (the MOSS tables), keys ``psnr_rgb`` / ``ssim_rgb``:
    RGB, PSNR with peak 255; SSIM as scikit-image's default
    ``structural_similarity(a, b, channel_axis=-1, data_range=255)``: a 7×7
    uniform window, sample covariance (N/(N-1)), K1 = 0.01, K2 = 0.03, the
    map averaged away from a 3-pixel border, then over the three channels.
    The released code makes network outputs uint8 by *truncating* x·255.

Community convention (PReNet, Restormer, DRSformer tables), keys ``psnr_y`` /
``ssim_y``:
    the Y channel of MATLAB's ``rgb2ycbcr`` on uint8 images,
    ``Y = 16 + 65.481 r + 128.553 g + 24.966 b`` with r, g, b in [0, 1],
    rounded to an integer as MATLAB does for uint8 input; PSNR with peak 255;
    SSIM of Wang et al. 2004 (11×11 Gaussian window, σ = 1.5, K1 = 0.01,
    K2 = 0.03, population covariance, mean of the "valid" map), which is what
    ``tf.image.ssim`` computes on one channel.

Network outputs become uint8 as each convention's reference code makes
them: truncation for the paper numbers, rounding for the community numbers
(:func:`image_metrics` does this). Pixels that came from uint8 files (clean
references, rainy inputs) are always rounded, which recovers them exactly.

Both SSIMs share one implementation (:func:`ssim` with a window choice): the
five local moments are filtered together with two separable 1-D passes
(``scipy.ndimage.correlate1d``) in float64, so the numbers agree with float64
NumPy and scikit-image to ~1e-12, and scoring a 481×321 pair in all four
numbers takes milliseconds rather than the network's tenths of a second.

Example::

    derained = net(rainy, training=False)                      # [-1, 1]
    image_metrics(derained, clean, network_output=True)
    # {"psnr_rgb": ..., "ssim_rgb": ..., "psnr_y": ..., "ssim_y": ...}
    psnr_rgb(to_uint8(derained, truncate=True), to_uint8(clean, truncate=False))
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

__all__ = [
    "METRIC_KEYS",
    "RESULT_KEYS",
    "image_metrics",
    "psnr",
    "psnr_rgb",
    "psnr_y",
    "rgb_to_y",
    "ssim",
    "ssim_rgb",
    "ssim_y",
    "to_uint8",
]

METRIC_KEYS = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")
"""The keys :func:`image_metrics` returns, in table order."""

RESULT_KEYS = ("n", *METRIC_KEYS, *(f"input_{key}" for key in METRIC_KEYS))
"""Keys of a scored test split (``moss_tf.infer.scoring.evaluate``): its size, the
derained output's metrics, the rainy input's metrics, in this order."""

_PEAK = 255.0
# MATLAB rgb2ycbcr, Y row, for r, g, b in [0, 1] (ITU-R BT.601, studio swing).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
_Y_OFFSET = 16.0

Window = Literal["uniform7", "gaussian11"]


def to_uint8(images, *, truncate: bool) -> np.ndarray:
    """Convert images from the network range [-1, 1] to uint8 [0, 255].

    Args:
        images: float array or tensor in [-1, 1] (values outside are clipped).
        truncate: ``True`` floors ``(x + 1) / 2 · 255`` as the released MOSS
            code does for its outputs (the paper's numbers); ``False`` rounds
            to the nearest integer, which recovers exactly the pixels of an
            image that was read from a uint8 file (use it for rainy inputs and
            clean references, whose float values can sit at 199.99998).

    Returns:
        uint8 NumPy array of the same shape.
    """
    x = np.asarray(images, dtype=np.float64)
    x = np.clip((x + 1.0) * (_PEAK / 2.0), 0.0, _PEAK)
    return (np.floor(x) if truncate else np.round(x)).astype(np.uint8)


def _as_batch(images, name: str) -> tuple[np.ndarray, bool]:
    """Return ``images`` as float64 ``[B, H, W, C]`` and whether it was one image."""
    x = np.asarray(images)
    if x.ndim == 3:
        return x[None].astype(np.float64), True
    if x.ndim == 4:
        return x.astype(np.float64), False
    raise ValueError(f"{name}: expected [H, W, C] or [B, H, W, C] images, got shape {x.shape}")


def _pair(a, b) -> tuple[np.ndarray, np.ndarray, bool]:
    x, single = _as_batch(a, "first image")
    y, _ = _as_batch(b, "second image")
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape[1:]} vs {y.shape[1:]}")
    return x, y, single


def _result(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def rgb_to_y(images) -> np.ndarray:
    """MATLAB ``rgb2ycbcr(...)(:, :, 1)`` for uint8 RGB images.

    Args:
        images: uint8 ``[..., 3]`` RGB in [0, 255].

    Returns:
        float64 ``[..., 1]`` Y in [16, 235], rounded to integers as MATLAB
        rounds its uint8 result.
    """
    rgb = np.asarray(images, dtype=np.float64)
    if rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_y: expected 3 channels, got shape {rgb.shape}")
    return np.round(rgb @ _Y_WEIGHTS + _Y_OFFSET)[..., None]


def psnr(a, b, data_range: float = _PEAK):
    """Peak signal-to-noise ratio in dB, per image, over all pixels and channels.

    Args:
        a, b: images ``[H, W, C]`` or ``[B, H, W, C]`` on the same scale.
        data_range: the peak value; 255 (default) for uint8 images.

    Returns:
        float (one image) or float64 ``[B]``; ``inf`` for identical images.
    """
    x, y, single = _pair(a, b)
    mse = np.mean((x - y) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(data_range**2 / mse)
    return _result(values, single)


def _window(window: Window) -> tuple[np.ndarray, float]:
    """The 1-D averaging weights (the 2-D window is their outer product) and the
    covariance normalisation that goes with them."""
    if window == "uniform7":
        size = 7
        return np.full(size, 1.0 / size), size**2 / (size**2 - 1.0)  # sample covariance
    if window == "gaussian11":
        size, sigma = 11, 1.5
        t = np.arange(size) - (size - 1) / 2.0
        g = np.exp(-(t**2) / (2.0 * sigma**2))
        return g / g.sum(), 1.0  # Wang et al.: population covariance
    raise ValueError(f"unknown SSIM window {window!r}; use 'uniform7' or 'gaussian11'")


def _local_means(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Window averages over height and width (axes -3, -2) where the whole window fits.

    Both windows are separable, so two 1-D passes replace one 2-D pass; the
    border the padding mode touches is cropped away ("valid" filtering).
    """
    for axis in (-3, -2):
        stack = ndimage.correlate1d(stack, weights, axis=axis, mode="constant")
    border = len(weights) // 2
    return stack[..., border:-border, border:-border, :]


def ssim(a, b, window: Window = "uniform7", data_range: float = _PEAK):
    """Structural similarity, per image, averaged over the valid map and channels.

    Only the positions where the whole window fits the image count ("valid"
    filtering); for the uniform window this equals scikit-image's reflect
    filtering followed by its crop of ``(7 - 1) // 2`` border pixels.

    Args:
        a, b: images ``[H, W, C]`` or ``[B, H, W, C]``, at least the window
            size in height and width.
        window: ``"uniform7"`` (scikit-image default, sample covariance) or
            ``"gaussian11"`` (Wang et al. 2004, σ = 1.5, population covariance).
        data_range: the peak value; 255 (default) for uint8 images.

    Returns:
        float (one image) or float64 ``[B]`` in [-1, 1].
    """
    x, y, single = _pair(a, b)
    weights, cov_norm = _window(window)
    size = len(weights)
    if min(x.shape[1:3]) < size:
        raise ValueError(
            f"SSIM with the {window} window needs images of at least {size}x{size} pixels, "
            f"got {x.shape[1]}x{x.shape[2]}"
        )
    mu_x, mu_y, xx, yy, xy = _local_means(np.stack([x, y, x * x, y * y, x * y]), weights)
    var_x = cov_norm * (xx - mu_x * mu_x)
    var_y = cov_norm * (yy - mu_y * mu_y)
    cov_xy = cov_norm * (xy - mu_x * mu_y)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    ssim_map = ((2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    return _result(ssim_map.mean(axis=(1, 2, 3)), single)


def psnr_rgb(a, b):
    """Paper convention PSNR: uint8 RGB ``[..., 3]`` images, peak 255."""
    return psnr(a, b)


def ssim_rgb(a, b):
    """Paper convention SSIM: scikit-image default on uint8 RGB, channel mean."""
    return ssim(a, b, window="uniform7")


def psnr_y(a, b):
    """Community convention PSNR: MATLAB Y channel of uint8 RGB, peak 255."""
    return psnr(rgb_to_y(a), rgb_to_y(b))


def ssim_y(a, b):
    """Community convention SSIM: Wang et al. Gaussian SSIM on the MATLAB Y channel."""
    return ssim(rgb_to_y(a), rgb_to_y(b), window="gaussian11")


def image_metrics(restored, clean, *, network_output: bool) -> dict[str, float | np.ndarray]:
    """All four numbers of docs/method.md §4, each quantised as its convention's code does.

    Args:
        restored: float ``[H, W, 3]`` or ``[B, H, W, 3]`` in [-1, 1]: a network
            output, or a rainy input decoded from a uint8 file.
        clean: the clean references, same shape, in [-1, 1] (decoded from uint8).
        network_output: ``True`` for network outputs: the RGB (paper) numbers
            use the released MOSS code's truncation, the Y (community) numbers
            rounding, as outputs saved with ``img_as_ubyte`` and read by the
            MATLAB scripts are. ``False`` for pixels that came from a file
            (rainy inputs): both conventions round, recovering the stored
            values exactly.

    Returns:
        ``{"psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y"}``: floats for one image,
        float64 ``[B]`` arrays for a batch.
    """
    reference = to_uint8(clean, truncate=False)
    rounded = to_uint8(restored, truncate=False)
    paper = to_uint8(restored, truncate=True) if network_output else rounded
    reference_y, rounded_y = rgb_to_y(reference), rgb_to_y(rounded)
    return {
        "psnr_rgb": psnr(paper, reference),
        "ssim_rgb": ssim(paper, reference, window="uniform7"),
        "psnr_y": psnr(rounded_y, reference_y),
        "ssim_y": ssim(rounded_y, reference_y, window="gaussian11"),
    }
