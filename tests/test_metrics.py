"""PSNR / SSIM in both conventions against float64 NumPy, scikit-image and TF."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from numpy.lib.stride_tricks import sliding_window_view
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from moss_tf.infer import metrics


def _pair(seed: int, shape=(2, 29, 37, 3), noise=25.0):
    """A clean uint8 batch with texture and a noisy version of it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    base = 128 + 90 * np.sin(xx / 4.0)[None, :, :, None] * np.cos(yy / 6.0)[None, :, :, None]
    clean = np.clip(base + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)
    noisy = np.clip(clean + rng.normal(0, noise, shape), 0, 255).astype(np.uint8)
    return noisy, clean


# ------------------------------------------------------------------ float64 references


def ref_psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def ref_ssim_channel(x, y, kernel, cov_norm):
    """SSIM of one 2-D channel: explicit windows, weighted moments, mean of the map."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    wx = sliding_window_view(x, kernel.shape)
    wy = sliding_window_view(y, kernel.shape)
    mx = np.sum(wx * kernel, axis=(-2, -1))
    my = np.sum(wy * kernel, axis=(-2, -1))
    dx = wx - mx[..., None, None]
    dy = wy - my[..., None, None]
    vx = cov_norm * np.sum(kernel * dx * dx, axis=(-2, -1))
    vy = cov_norm * np.sum(kernel * dy * dy, axis=(-2, -1))
    cxy = cov_norm * np.sum(kernel * dx * dy, axis=(-2, -1))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean()


def ref_ssim_rgb(a, b):
    kernel = np.full((7, 7), 1 / 49)
    return np.mean([ref_ssim_channel(a[..., c], b[..., c], kernel, 49 / 48) for c in range(3)])


def ref_y(rgb):
    """MATLAB rgb2ycbcr on uint8: Y = 16 + (65.481 R + 128.553 G + 24.966 B)/255, rounded."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return np.round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255)


def ref_gaussian():
    t = np.arange(11) - 5.0
    k = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5**2))
    return k / k.sum()


# ------------------------------------------------------------------------------ tests


def test_psnr_matches_reference_and_skimage():
    noisy, clean = _pair(0)
    got = metrics.psnr_rgb(noisy, clean)
    assert got.shape == (2,)
    for i in range(2):
        assert got[i] == pytest.approx(ref_psnr(noisy[i], clean[i]), abs=1e-10)
        assert got[i] == pytest.approx(
            peak_signal_noise_ratio(clean[i], noisy[i], data_range=255), abs=1e-10
        )
    # One image in, one float out; identical images have infinite PSNR.
    assert isinstance(metrics.psnr_rgb(noisy[0], clean[0]), float)
    assert metrics.psnr_rgb(clean[0], clean[0]) == np.inf


def test_ssim_rgb_matches_reference_and_skimage_default():
    noisy, clean = _pair(1)
    got = metrics.ssim_rgb(noisy, clean)
    for i in range(2):
        skimage_value = structural_similarity(noisy[i], clean[i], channel_axis=-1, data_range=255)
        assert got[i] == pytest.approx(skimage_value, abs=1e-10)
        assert got[i] == pytest.approx(ref_ssim_rgb(noisy[i], clean[i]), abs=1e-10)
    assert metrics.ssim_rgb(clean[0], clean[0]) == pytest.approx(1.0, abs=1e-12)
    # Worse images score lower: the metric tracks quality, not just shape.
    worse, _ = _pair(1, noise=60.0)
    assert np.all(metrics.ssim_rgb(worse, clean) < got)


def test_y_channel_is_matlab_rgb2ycbcr():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y = metrics.rgb_to_y(rgb)[..., 0]
    # MATLAB: rgb2ycbcr(uint8([0 0 0; 255 255 255; 255 0 0; 0 255 0; 0 0 255]))(:, 1)
    np.testing.assert_array_equal(y, [[16, 235, 81, 145, 41]])
    noisy, _ = _pair(2)
    np.testing.assert_array_equal(metrics.rgb_to_y(noisy)[..., 0], ref_y(noisy))


def test_y_metrics_match_references_and_tf_image_ssim():
    noisy, clean = _pair(3)
    got_psnr, got_ssim = metrics.psnr_y(noisy, clean), metrics.ssim_y(noisy, clean)
    for i in range(2):
        yn, yc = ref_y(noisy[i]), ref_y(clean[i])
        assert got_psnr[i] == pytest.approx(ref_psnr(yn, yc), abs=1e-10)
        want = ref_ssim_channel(yn, yc, ref_gaussian(), 1.0)
        assert got_ssim[i] == pytest.approx(want, abs=1e-10)
        tf_value = tf.image.ssim(yn[..., None], yc[..., None], max_val=255.0).numpy()
        assert got_ssim[i] == pytest.approx(float(tf_value), abs=2e-5)  # TF works in float32


def test_to_uint8_truncates_outputs_and_rounds_references():
    pixels = np.arange(256, dtype=np.float32)
    model_range = pixels / np.float32(127.5) - 1  # what the data pipeline produces
    # Rounding recovers every stored pixel; truncation (released code) may lose one level.
    np.testing.assert_array_equal(metrics.to_uint8(model_range, truncate=False), pixels)
    half = np.array([-1.0, -0.999, 0.0, 0.999, 1.0, 1.5, -3.0])
    np.testing.assert_array_equal(
        metrics.to_uint8(half, truncate=True), [0, 0, 127, 254, 255, 255, 0]
    )
    np.testing.assert_array_equal(
        metrics.to_uint8(half, truncate=False), [0, 0, 128, 255, 255, 255, 0]
    )


def test_bad_inputs_say_what_is_wrong():
    noisy, clean = _pair(4)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr_rgb(noisy[0], clean[0, :-1])
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim_y(noisy[0, :10], clean[0, :10])


def test_image_metrics_quantise_each_convention_as_its_reference_code():
    noisy, clean = _pair(5)
    clean_m = clean / 127.5 - 1.0
    # A network output slightly below each level: truncation drops it one level, rounding not.
    output = (noisy.astype(np.float64) - 0.2) / 127.5 - 1.0
    got = metrics.image_metrics(output, clean_m, network_output=True)
    assert set(got) == set(metrics.METRIC_KEYS)
    truncated = np.clip(noisy.astype(np.int64) - 1, 0, 255).astype(np.uint8)
    np.testing.assert_allclose(got["psnr_rgb"], metrics.psnr_rgb(truncated, clean), atol=1e-12)
    np.testing.assert_allclose(got["ssim_rgb"], metrics.ssim_rgb(truncated, clean), atol=1e-12)
    np.testing.assert_allclose(got["psnr_y"], metrics.psnr_y(noisy, clean), atol=1e-12)
    np.testing.assert_allclose(got["ssim_y"], metrics.ssim_y(noisy, clean), atol=1e-12)
    # Pixels read from a file (rainy inputs) are recovered exactly in both conventions.
    rainy = metrics.image_metrics(noisy / 127.5 - 1.0, clean_m, network_output=False)
    np.testing.assert_allclose(rainy["psnr_rgb"], metrics.psnr_rgb(noisy, clean), atol=1e-12)


def test_ssim_on_images_the_size_of_the_window_uses_the_one_full_window():
    noisy, clean = _pair(6, shape=(1, 11, 11, 3))
    kernel = np.full((7, 7), 1 / 49)
    want = np.mean(
        [
            ref_ssim_channel(noisy[0, 2:9, 3:10, c], clean[0, 2:9, 3:10, c], kernel, 49 / 48)
            for c in range(3)
        ]
    )
    got = metrics.ssim_rgb(noisy[0, 2:9, 3:10], clean[0, 2:9, 3:10])
    assert got == pytest.approx(want, abs=1e-10)
    yn, yc = ref_y(noisy[0]), ref_y(clean[0])
    want_y = ref_ssim_channel(yn, yc, ref_gaussian(), 1.0)
    assert metrics.ssim_y(noisy[0], clean[0]) == pytest.approx(want_y, abs=1e-10)
