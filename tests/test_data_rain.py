"""Rain synthesis: range, that rain is added, determinism, geometry, presets."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from moss_tf.config import config_from_dict
from moss_tf.data import RainConfig, RainSynthesizer
from moss_tf.data.data_config import RAIN_PRESETS
from moss_tf.data.pool import ImagePool
from moss_tf.data.rain import procedural_streaks, streak_layer_rain
from moss_tf.errors import ConfigError


def _clean(height=64, width=64) -> tf.Tensor:
    """A mid-grey gradient in [0, 1], so both brightening and clipping are visible."""
    ramp = np.linspace(0.2, 0.6, width, dtype=np.float32)
    return tf.constant(np.broadcast_to(ramp[None, :, None], (height, width, 3)).copy())


@pytest.mark.parametrize("preset", sorted(RAIN_PRESETS))
def test_every_preset_adds_rain_in_range(preset):
    clean = _clean()
    rainy = RainSynthesizer(RainConfig(preset=preset))(clean, seed=[3, 4]).numpy()
    assert rainy.shape == (64, 64, 3) and rainy.dtype == np.float32
    assert rainy.min() >= 0.0 and rainy.max() <= 1.0
    # Rain is bright: it never darkens a pixel and raises the mean clearly.
    assert np.all(rainy >= clean.numpy() - 1e-6)
    assert rainy.mean() > clean.numpy().mean() + 0.01


def test_same_seed_same_rain_other_seed_other_rain():
    rain = RainSynthesizer(RainConfig(preset="heavy"))
    clean = _clean()
    first = rain(clean, seed=[0, 1]).numpy()
    np.testing.assert_array_equal(first, rain(clean, seed=[0, 1]).numpy())
    assert np.abs(first - rain(clean, seed=[0, 2]).numpy()).mean() > 0.01


def _streaks(angle: float, height=96, width=96) -> np.ndarray:
    rain = RainConfig(preset="light", density=0.01, angle=[angle, angle], length=[30.0, 30.0])
    return procedural_streaks(tf.constant(height), tf.constant(width), rain, tf.constant([5, 6]))[
        ..., 0
    ].numpy()


def _shifted_correlation(layer: np.ndarray, dy: int, dx: int) -> float:
    """Correlation of the layer with itself moved by (dy, dx): high along streaks."""
    a = layer[8:-8, 8:-8]
    b = np.roll(layer, (dy, dx), axis=(0, 1))[8:-8, 8:-8]
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_streak_direction_follows_the_angle():
    vertical = _streaks(0.0)
    assert vertical.shape == (96, 96)
    assert 0.0 < vertical.mean() < 0.5 and vertical.max() <= 1.0
    # Vertical streaks: pixels 4 rows apart belong to the same streak, 4 columns apart not.
    assert _shifted_correlation(vertical, 4, 0) > 0.5 > _shifted_correlation(vertical, 0, 4)
    # 45 degrees, top leaning right: the streak continues up-right / down-left.
    slanted = _streaks(45.0)
    along = _shifted_correlation(slanted, 3, -3)  # one step down-left
    across = _shifted_correlation(slanted, 3, 3)  # one step down-right
    assert along > 0.5 > across


def test_haze_lifts_dark_pixels_and_lowers_contrast():
    clean = tf.zeros([32, 32, 3])
    hazy = RainConfig(preset="light", density=0.0001, haze=[0.3, 0.3], intensity=[0.0, 0.0])
    out = RainSynthesizer(hazy)(clean, seed=[1, 1]).numpy()
    # A veil of strength 0.3 and brightness in [0.8, 0.95] over black.
    assert out.min() >= 0.8 * 0.3 - 1e-6 and out.max() <= 0.95 * 0.3 + 1e-6


def test_additive_blend_is_brighter_than_screen():
    clean = _clean()
    screen = RainSynthesizer(RainConfig(preset="heavy", blend="screen"))(clean, seed=[2, 2])
    add = RainSynthesizer(RainConfig(preset="heavy", blend="add"))(clean, seed=[2, 2])
    assert float(tf.reduce_mean(add)) > float(tf.reduce_mean(screen))
    assert float(tf.reduce_max(add)) <= 1.0


def test_streak_layers_are_composited():
    # Two layers with white vertical lines on black, smaller than the output.
    layer = np.zeros((40, 50, 1), np.uint8)
    layer[:, ::7] = 255
    pool = ImagePool([layer, layer[:, ::-1].copy()])
    rain = RainConfig(preset="light", density=0.0, streaks="layers", streak_rotation=[0.0, 0.0])
    placed = streak_layer_rain(pool, tf.constant(64), tf.constant(80), rain, tf.constant([0, 9]))
    placed = placed.numpy()
    assert placed.shape == (64, 80, 1)
    assert 0.02 < placed.mean() < 0.5 and placed.max() <= 1.0  # mirrored past the border

    rainy = RainSynthesizer(rain, pool)(_clean(64, 80), seed=[0, 9]).numpy()
    assert rainy.mean() > _clean(64, 80).numpy().mean() + 0.01
    np.testing.assert_array_equal(rainy, RainSynthesizer(rain, pool)(_clean(64, 80), [0, 9]))


def test_presets_fill_unset_keys_and_explicit_keys_win():
    rain = RainConfig(preset="heavy", density=0.05)
    assert rain.density == 0.05
    assert rain.length == RAIN_PRESETS["heavy"]["length"]
    assert RAIN_PRESETS["fine_vertical"] != RAIN_PRESETS["slanted_haze"]


@pytest.mark.parametrize(
    ("rain", "key"),
    [
        ({"preset": "drizzle"}, "data.labeled.rain.preset"),
        ({"angle": [30, 10]}, "data.labeled.rain.angle"),
        ({"blend": "multiply"}, "data.labeled.rain.blend"),
        ({"intensity": [0.5, 1.5]}, "data.labeled.rain.intensity"),
    ],
)
def test_bad_rain_settings_name_the_key(rain, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict({"data": {"labeled": {"clean": "builtin", "rain": rain}}})


def _texture(size=64) -> np.ndarray:
    """A smooth colour texture in [0.2, 0.6]: mid-tones, so rain and veil both show."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = 0.4 + 0.2 * np.sin(6 * x + 3 * y) * np.cos(5 * y)
    return np.stack([base, base * 0.9 + 0.04, base * 0.8 + 0.08], -1).astype(np.float32)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return np.inf if mse == 0 else 10 * np.log10(1 / mse)


def test_realistic_preset_spans_no_rain_to_dense_within_bounds():
    clean = _texture()
    rain = RainSynthesizer(RainConfig(preset="realistic"))
    samples = [rain(tf.constant(clean), seed=[s, 3]).numpy() for s in range(48)]
    psnr = np.array([_psnr(r, clean) for r in samples])
    change = np.array([(r - clean).mean() for r in samples])
    for rainy in samples:
        assert rainy.min() >= 0.0 and rainy.max() <= 1.0
        # Streaks and a bright veil (airlight >= 0.72 > 0.6) only ever lighten.
        assert np.all(rainy >= clean - 1e-6)
    # clean_probability 0.1: some of 48 images are untouched (P(none) < 1%).
    untouched = ~np.isfinite(psnr)
    assert 1 <= untouched.sum() <= 12
    assert np.all(change[untouched] == 0)
    rainy_psnr = psnr[~untouched]
    # From barely visible drizzle to dense rain, but never washed out like
    # ``heavy`` (about 7 dB): the densest streaks plus the thickest veil stay
    # above 12 dB.
    assert rainy_psnr.max() > 30.0
    assert 12.0 < rainy_psnr.min() < 22.0
    assert change[~untouched].min() < 0.01 and 0.05 < change.max() < 0.35


def _veil_on_every_image(**keys) -> RainConfig:
    """``realistic``, none left clean, a veil on every image however light (``keys`` win)."""
    values = {"density": 0.0, "veil_probability": 1.0, "veil_min_density": 0.0}
    return RainConfig(preset="realistic", clean_probability=0.0, **{**values, **keys})


def test_veil_follows_the_scattering_model_and_thins_downwards():
    black = tf.zeros([32, 16, 3])
    veil = _veil_on_every_image(veil_transmission=[0.7, 0.9])
    for seed in range(6):
        out = RainSynthesizer(veil)(black, seed=[seed, 5]).numpy()
        assert out.min() > 0.0  # veiled everywhere
        # Over black, I = A (1 - t): at most 0.3 * (0.95 + 0.03), at least 0 with t <= 1.
        assert out.max() <= 0.3 * 0.98 + 1e-6
        rows = out.mean(axis=(1, 2))
        assert np.all(np.diff(rows) <= 1e-6)  # thickest at the top (farthest)
        assert rows[0] >= 0.0


def test_no_veil_and_no_streaks_leave_the_background_unchanged():
    clean = tf.constant(_texture())
    still = _veil_on_every_image(veil_transmission=[1.0, 1.0])
    out = RainSynthesizer(still)(clean, seed=[4, 4]).numpy()
    np.testing.assert_allclose(out, clean.numpy(), atol=1e-6)


def _veiled(rain: RainConfig, seed) -> bool:
    """Whether ``rain`` veiled a black image: streaks light few pixels, a veil all."""
    out = RainSynthesizer(rain)(tf.zeros([48, 48, 3]), seed=[seed, 2]).numpy()
    return bool(out.min() > 0.1)


def test_only_rain_as_dense_as_veil_min_density_gets_a_veil():
    def rain(density):
        return _veil_on_every_image(
            density=density,
            veil_min_density=0.002,
            veil_transmission=[0.7, 0.7],
            veil_gradient=[0.0, 0.0],
        )

    assert not any(_veiled(rain(0.001), seed) for seed in range(4))
    assert all(_veiled(rain(0.004), seed) for seed in range(4))
    # A drawn density: veiled where the draw reaches 0.002, log-uniformly
    # ln(0.012/0.002) / ln(0.012/0.0005) = 56% of the images.
    share = np.mean([_veiled(rain([0.0005, 0.012]), seed) for seed in range(64)])
    assert 0.35 < share < 0.77


def test_clean_probability_one_returns_the_clean_image():
    clean = tf.constant(_texture())
    always = RainConfig(preset="realistic", clean_probability=1.0)
    for seed in range(3):
        np.testing.assert_array_equal(RainSynthesizer(always)(clean, [seed, 1]).numpy(), clean)


def test_realistic_preset_is_deterministic_under_the_seed():
    layer = np.zeros((40, 50, 1), np.uint8)
    layer[:, ::7] = 255
    rain = RainSynthesizer(
        RainConfig(preset="realistic", streaks="layers", clean_probability=0.0),
        ImagePool([layer]),
    )
    clean = tf.constant(_texture())
    first = rain(clean, seed=[8, 1]).numpy()
    np.testing.assert_array_equal(first, rain(clean, seed=[8, 1]).numpy())
    for other in ([8, 2], [9, 1]):
        assert np.abs(first - rain(clean, seed=other).numpy()).mean() > 1e-3


@pytest.mark.parametrize(
    ("rain", "key"),
    [
        ({"density": [0.0, 0.01]}, "density"),
        ({"density": [0.02, 0.01]}, "density"),
        ({"blur": [0.0, 20.0]}, "blur"),
        ({"veil_probability": 1.5}, "veil_probability"),
        ({"veil_min_density": -0.1}, "veil_min_density"),
        ({"veil_transmission": [0.5, 1.2]}, "veil_transmission"),
        ({"veil_gradient": [-0.1, 0.5]}, "veil_gradient"),
        ({"airlight": [0.9, 0.8]}, "airlight"),
        ({"airlight_tint": 0.5}, "airlight_tint"),
        ({"clean_probability": 1.0}, "clean_probability"),
    ],
)
def test_bad_realistic_settings_name_the_key(rain, key):
    with pytest.raises(ConfigError, match=rf"data\.labeled\.rain\.{key}"):
        config_from_dict(
            {"data": {"labeled": {"clean": "builtin", "rain": {"preset": "realistic", **rain}}}}
        )
    config_from_dict({"data": {"labeled": {"clean": "builtin", "rain": {"preset": "realistic"}}}})


def test_sample_grid_renders_from_bundled_photographs():
    from moss_tf.data.rain_samples import PHOTOS, render_grid

    grid = render_grid("realistic", None, columns=2, crop=32)
    assert grid.dtype == np.uint8
    assert grid.shape == (len(PHOTOS) * 32 + (len(PHOTOS) - 1) * 4, 3 * 32 + 2 * 4, 3)


def test_rain_strength_is_measured_on_the_first_photos_of_a_folder(tmp_path):
    from moss_tf.data.rain_samples import rain_psnrs

    for i in range(3):
        Image.fromarray((_texture(48) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    heavy = rain_psnrs("heavy", None, str(tmp_path), count=2, crop=32)
    light = rain_psnrs("light", None, str(tmp_path), count=2, crop=32)
    assert heavy.shape == light.shape == (2,)
    assert np.all(heavy < 15.0) and np.all(heavy < light)
