"""Rain synthesis: range, that rain is added, determinism, geometry, presets."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from moss_tf.config import config_from_dict
from moss_tf.data import RainConfig, RainSynthesizer
from moss_tf.data.config import RAIN_PRESETS
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
