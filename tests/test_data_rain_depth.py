"""Rain at several depths, accumulation with distance, more backgrounds (issue 29).

Each option is off by default and then leaves earlier rain exactly as it was
drawn; on, it is drawn per image from its ranges under the seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from moss_tf.config import config_from_dict
from moss_tf.data import RainConfig, RainSynthesizer, build_test_sets, build_training_data
from moss_tf.data.pool import ImagePool
from moss_tf.data.rain import accumulation_transmission, depth_layers, procedural_streaks
from moss_tf.errors import ConfigError, DataError

# --------------------------------------------------------------------------- off by default

# Values the synthesis drew before these options existed (commit edd9d6e's
# code): (preset, streak layers, seed) -> (sum of the image, pixel [5, 7], pixel [33, 50]).
EARLIER_DRAWS = {
    ("realistic", True, (8, 1)): (
        2852.103183746338,
        [0.5328989624977112, 0.46382296085357666, 0.2983008623123169],
        [0.5228661298751831, 0.409328818321228, 0.6577447056770325],
    ),
    ("realistic", True, (3, 9)): (
        3013.408770740032,
        [0.6393406987190247, 0.5860055685043335, 0.45820218324661255],
        [0.5278383493423462, 0.4154842495918274, 0.6613113880157471],
    ),
    ("heavy", False, (3, 9)): (
        4983.021579682827,
        [0.7444297075271606, 0.7089278697967529, 0.6238572597503662],
        [0.6034291386604309, 0.5152863264083862, 0.7081398963928223],
    ),
    ("slanted_haze", False, (8, 1)): (
        3035.703758507967,
        [0.49427473545074463, 0.4207175672054291, 0.2444576919078827],
        [0.6079902648925781, 0.4997509717941284, 0.7365749478340149],
    ),
}


def _random_clean() -> tf.Tensor:
    rng = np.random.default_rng(0)
    return tf.constant(rng.uniform(0.1, 0.7, (40, 56, 3)).astype(np.float32))


def _bar_layers() -> ImagePool:
    layer = np.zeros((40, 50, 1), np.uint8)
    layer[:, ::7] = 255
    return ImagePool([layer])


@pytest.mark.parametrize(("preset", "layers", "seed"), sorted(EARLIER_DRAWS))
def test_new_options_off_leave_earlier_draws_unchanged(preset, layers, seed):
    total, first, second = EARLIER_DRAWS[(preset, layers, seed)]
    rain = RainConfig(preset=preset, streaks="x" if layers else None, clean_probability=0.0)
    assert rain.depth_layers == [0, 0] and rain.accumulation_probability == 0.0  # off
    assert rain.crisp_probability == 0.0 and rain.light_tint == 0.0
    out = RainSynthesizer(rain, _bar_layers() if layers else None)(_random_clean(), list(seed))
    out = out.numpy()
    assert float(out.astype(np.float64).sum()) == pytest.approx(total, rel=1e-6)
    np.testing.assert_allclose(out[5, 7], first, atol=1e-5)
    np.testing.assert_allclose(out[33, 50], second, atol=1e-5)


def test_training_crops_are_drawn_as_before():
    """The labeled stream (crop, flip, rain) of edd9d6e's code, first batch."""
    cfg = config_from_dict(
        {"data": {"labeled": {"rain": {"preset": "realistic", "clean_probability": 0.0}}}}
    ).data
    data = build_training_data(cfg, batch_size=2, crop_size=32, seed=3, with_unlabeled=False)
    rainy, clean = (t.numpy().astype(np.float64) for t in next(iter(data.labeled)))
    assert rainy.sum() == pytest.approx(-2306.661059617996, rel=1e-6)
    assert clean.sum() == pytest.approx(-2644.0705369114876, rel=1e-6)
    np.testing.assert_allclose(rainy[1, 5, 9], [0.4431373, -0.6235294, -0.8666667], atol=1e-5)


# --------------------------------------------------------------------------- depth layers


def _pinned(**keys) -> RainConfig:
    """One depth layer (unless ``keys`` say otherwise) whose [far, near] pairs are equal."""
    values = {
        "preset": "light",
        "density": 0.0,
        "streaks": "x",  # no procedural streaks of the light preset; depth layers only
        "angle": [0.0, 0.0],
        "depth_layers": [1, 1],
        "depth_length": [30.0, 30.0],
        "depth_width": [1.0, 1.0],
        "depth_blur": [0.0, 0.0],
        "depth_intensity": [0.6, 0.6],
        "depth_density": [0.003, 0.003],
    }
    return RainConfig(**{**values, **keys})


def _depth(rain: RainConfig, seed, size=96) -> np.ndarray:
    angle = tf.constant(np.radians(rain.angle[0]), tf.float32)
    out = depth_layers(tf.constant(size), tf.constant(size), rain, tf.constant(seed), angle)
    return out[..., 0].numpy()


def _correlation(layer: np.ndarray, dy: int, dx: int) -> float:
    a = layer[20:-20, 20:-20]
    b = np.roll(layer, (dy, dx), axis=(0, 1))[20:-20, 20:-20]
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _fine_share(layer: np.ndarray) -> float:
    """Share of the layer's energy above a 1-pixel blur: high for sharp streaks."""
    from scipy import ndimage

    centred = layer - layer.mean()
    fine = centred - ndimage.gaussian_filter(centred, 1.0)
    return float((fine**2).sum() / (centred**2).sum())


def test_depth_layers_are_seed_deterministic():
    rain = _pinned(depth_layers=[1, 3], depth_length=[8.0, 60.0], depth_density=[0.004, 0.0003])
    first = _depth(rain, [4, 2])
    np.testing.assert_array_equal(first, _depth(rain, [4, 2]))
    assert np.abs(first - _depth(rain, [4, 3])).mean() > 1e-3


def test_the_number_of_depth_layers_is_drawn_in_its_range():
    def mass(layers, seed):
        return _depth(_pinned(depth_layers=layers), [seed, 1]).sum()

    one = np.mean([mass([1, 1], s) for s in range(8)])
    two = np.mean([mass([2, 2], s) for s in range(8)])
    assert 1.6 * one < two < 2.4 * one  # two layers carry about twice the rain
    some_none = [mass([0, 1], s) for s in range(24)]
    assert 4 <= sum(m == 0 for m in some_none) <= 20  # count 0 about half of the time
    assert all(mass([1, 2], s) > 0 for s in range(12))


def test_depth_layer_length_exposure_blur_and_angle_follow_the_settings():
    short = _depth(_pinned(depth_length=[6.0, 6.0]), [1, 1])
    long = _depth(_pinned(depth_length=[60.0, 60.0]), [1, 1])
    assert _correlation(long, 15, 0) > 0.5 > _correlation(short, 15, 0)
    exposed = _depth(_pinned(depth_length=[6.0, 6.0], depth_exposure=[10.0, 10.0]), [1, 1])
    assert _correlation(exposed, 15, 0) > 0.5
    sharp = _depth(_pinned(), [2, 1])
    blurred = _depth(_pinned(depth_blur=[2.0, 2.0]), [2, 1])
    assert _fine_share(blurred) < 0.5 * _fine_share(sharp)
    slanted = _depth(_pinned(angle=[45.0, 45.0]), [3, 1])
    assert _correlation(slanted, 6, -6) > 0.5 > _correlation(slanted, 6, 6)  # up-right


def test_far_layers_are_thin_and_near_layers_wide_by_their_nearness():
    # Far and near differ only in width: each layer's width is between them,
    # thin ones and wide ones both drawn.
    rain = _pinned(depth_width=[1.0, 7.0], depth_density=[0.002, 0.002])
    widths = []
    for seed in range(12):
        layer = _depth(rain, [seed, 7])
        widths.append(_correlation(layer, 0, 2))  # high only for wide streaks
    assert min(widths) < 0.2 and max(widths) > 0.6


def test_depth_layers_share_the_images_streak_angle_in_the_synthesizer():
    rain = RainConfig(
        preset="light",
        density=0.002,
        angle=[40.0, 40.0],
        intensity=[0.0, 0.0],  # the procedural streaks are invisible: the layers show
        depth_layers=[2, 2],
        depth_length=[40.0, 40.0],
        depth_width=[1.0, 1.0],
        depth_blur=[0.0, 0.0],
    )
    rainy = RainSynthesizer(rain)(tf.zeros([96, 96, 3]), [5, 5]).numpy()[..., 0]
    assert rainy.max() > 0.1
    assert _correlation(rainy, 6, -5) > 0.5 > _correlation(rainy, 6, 5)


# --------------------------------------------------------------------------- accumulation


def test_accumulation_transmission_grows_towards_the_bottom_row():
    rows = tf.linspace(0.0, 1.0, 101)
    t = accumulation_transmission(
        rows, tf.constant(0.9), tf.constant(0.4), tf.constant(0.3)
    ).numpy()
    assert np.allclose(t[rows.numpy() <= 0.3], 0.4)  # at and above the horizon: the far value
    assert t[-1] == pytest.approx(0.9)  # the bottom row: the near value
    assert np.all(np.diff(t) >= -1e-7) and t.min() >= 0.4 - 1e-6
    # A ground plane: optical depth doubles halfway between the horizon and the bottom.
    halfway = np.argmin(np.abs(rows.numpy() - 0.65))
    assert -np.log(t[halfway]) == pytest.approx(-2 * np.log(0.9), rel=0.05)


def _accumulation(**keys) -> RainConfig:
    values = {
        "preset": "light",
        "intensity": [0.0, 0.0],  # streaks invisible: only the accumulation shows
        "accumulation_probability": 1.0,
        "accumulation_near": [0.8, 0.95],
        "accumulation_far": [0.4, 0.6],
        "accumulation_horizon": [0.2, 0.5],
        "accumulation_airlight": [0.4, 0.6],
    }
    return RainConfig(**{**values, **keys})


def test_accumulation_follows_the_scattering_model_thickest_far_away():
    for seed in range(8):
        out = RainSynthesizer(_accumulation())(tf.zeros([64, 32, 3]), [seed, 3]).numpy()
        # Over black I = A (1 - t): A <= 0.6, 1 - t <= 1 - 0.4 at the far rows.
        assert out.min() > 0.0 and out.max() <= 0.6 * 0.6 + 1e-6
        assert out[0].mean() >= 0.4 * 0.4 - 1e-6  # the top rows are far: t <= 0.6
        rows = out.mean(axis=(1, 2))
        assert np.all(np.diff(rows) <= 1e-6)  # thinner towards the bottom (near)
        assert rows[-1] <= 0.6 * 0.2 + 1e-6  # bottom row: t >= 0.8


def test_accumulation_is_drawn_per_image_with_its_probability_and_density_gate():
    def veiled(rain, seed):
        return RainSynthesizer(rain)(tf.zeros([16, 16, 3]), [seed, 9]).numpy().min() > 0.01

    rain = _accumulation(accumulation_probability=0.5)
    share = np.mean([veiled(rain, s) for s in range(48)])
    assert 0.3 < share < 0.7
    gated = _accumulation(density=0.001, veil_min_density=0.002)
    assert not any(veiled(gated, s) for s in range(6))
    rain = _accumulation()
    first = RainSynthesizer(rain)(tf.zeros([16, 16, 3]), [1, 1]).numpy()
    np.testing.assert_array_equal(first, RainSynthesizer(rain)(tf.zeros([16, 16, 3]), [1, 1]))


def test_a_crop_gets_the_accumulation_of_its_rows_in_the_photo():
    rain = RainSynthesizer(_accumulation(accumulation_horizon=[0.3, 0.3]))
    black = tf.zeros([16, 16, 3])
    top = rain(black, [2, 2], rows=(0, 160)).numpy().mean()
    bottom = rain(black, [2, 2], rows=(144, 160)).numpy().mean()
    assert top > 2 * bottom  # the crop above the horizon is far, the one at the bottom near


def test_training_crops_are_veiled_by_their_rows_in_the_photo(tmp_path):
    folder = tmp_path / "clean"
    folder.mkdir()
    Image.fromarray(np.zeros((400, 48, 3), np.uint8)).save(folder / "tall.png")
    rain = {
        **_accumulation(accumulation_horizon=[0.0, 0.0], accumulation_far=[0.05, 0.05]).to_dict(),
        "accumulation_near": [0.9, 0.9],
    }
    cfg = config_from_dict({"data": {"labeled": {"clean": str(folder), "rain": rain}}}).data
    data = build_training_data(cfg, batch_size=8, crop_size=16, seed=0, with_unlabeled=False)
    rainy, _ = next(iter(data.labeled))
    veil = (rainy.numpy() + 1.0) / 2.0  # over black: the veil itself
    first, last = veil[:, 0].mean(axis=(1, 2)), veil[:, -1].mean(axis=(1, 2))
    # In the whole photo a 16-row crop spans a small part of the distance
    # range; drawn as if it were the whole photo, its first row would be far
    # (t = 0.05) and its last near (t = 0.9).
    assert np.all(first < 2.0 * last)
    assert veil.mean(axis=(1, 2, 3)).std() > 0.01  # crops from higher up are more veiled


# --------------------------------------------------------------------------- crisp streaks


def _thin_streaks(crisp: float, seed) -> np.ndarray:
    rain = RainConfig(
        preset="realistic",
        density=[0.003, 0.003],
        width=[1.0, 1.0],
        angle=[0.0, 0.0],
        intensity=[0.5, 0.5],
        crisp_probability=crisp,
    )
    size = tf.constant(48)
    return procedural_streaks(size, size, rain, tf.constant(seed, tf.int64))[..., 0].numpy()


def _is_crisp(layer: np.ndarray) -> bool:
    # One-pixel bars: few lit pixels have a lit neighbour across the streaks (soft
    # streaks of the same width: more than half; crisp ones: where two streaks touch).
    lit = layer > 0.01
    return bool(np.sum(lit[:, 1:] & lit[:, :-1]) < 0.4 * np.sum(lit))


def test_crisp_streaks_are_one_pixel_bars_at_full_brightness():
    for seed in range(4):
        crisp, soft = _thin_streaks(1.0, [seed, 1]), _thin_streaks(0.0, [seed, 1])
        assert _is_crisp(crisp) and crisp.max() >= 0.5  # even: no taper, no resampling blur
        assert not _is_crisp(soft)  # tapered, spread by bilinear resampling


def test_crisp_streaks_come_at_their_probability_and_leave_the_rest_unchanged():
    crisp = []
    for seed in range(60):
        layer = _thin_streaks(0.4, [seed, 5])
        np.testing.assert_array_equal(layer, _thin_streaks(0.4, [seed, 5]))  # seed-deterministic
        crisp.append(_is_crisp(layer))
        if not crisp[-1]:
            np.testing.assert_array_equal(layer, _thin_streaks(0.0, [seed, 5]))
    assert 0.2 < np.mean(crisp) < 0.7


# --------------------------------------------------------------------------- the light's colour


def _light_colour(tint: float, seed) -> tuple[np.ndarray, np.ndarray]:
    """(median colour of the streaks, brightest channel 1; the image) of rain with
    ``light_tint=tint`` on black."""
    rain = RainConfig(
        preset="realistic",
        density=[0.01, 0.01],
        veil_probability=0.0,
        clean_probability=0.0,
        light_tint=tint,
    )
    black = tf.zeros([32, 32, 3])
    rainy = RainSynthesizer(rain)(black, seed).numpy()
    lit = rainy.max(axis=-1) > 0.05
    colour = np.median(rainy[lit] / rainy[lit].max(axis=-1, keepdims=True), axis=0)
    return colour, rainy


def test_light_tint_colours_each_image_within_its_range():
    colours = []
    for seed in range(40):
        colour, rainy = _light_colour(0.4, [seed, 3])
        again = _light_colour(0.4, [seed, 3])[1]
        np.testing.assert_array_equal(rainy, again)  # seed-deterministic
        assert colour.max() == pytest.approx(1.0) and colour.min() >= 0.6 - 1e-3
        colours.append(colour)
    colours = np.array(colours)
    assert colours.min() < 0.7  # some images far from white ...
    assert np.mean(colours.min(axis=1) > 0.9) > 0.05  # ... some nearly white
    assert np.all(colours.std(axis=0) > 0.05)  # every channel varies between images


@pytest.mark.parametrize("fog", ["veil", "accumulation"])
def test_light_tint_colours_the_fog_as_the_streaks(fog):
    rain = RainConfig(
        preset="realistic",
        intensity=[0.0, 0.0],  # no procedural streaks: the fog alone on black
        veil_probability=1.0 if fog == "veil" else 0.0,
        accumulation_probability=1.0 if fog == "accumulation" else 0.0,
        veil_min_density=0.0,
        veil_transmission=[0.5, 0.7],
        airlight_tint=0.0,
        clean_probability=0.0,
        light_tint=0.4,
    )
    for seed in range(5):
        rainy = RainSynthesizer(rain)(tf.zeros([32, 32, 3]), [seed, 3]).numpy()
        fog_colour = rainy[0, 0] / rainy[0, 0].max()  # the top row: the thickest fog
        np.testing.assert_allclose(fog_colour, _light_colour(0.4, [seed, 3])[0], atol=0.02)


def test_light_tint_changes_only_the_colour():
    for seed in range(5):
        white = _light_colour(0.0, [seed, 3])[1]
        assert np.allclose(white[..., 0], white[..., 2])  # grey streaks without the option
        tinted = _light_colour(0.5, [seed, 3])[1]
        np.testing.assert_allclose(tinted.max(axis=-1), white.max(axis=-1), atol=1e-6)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("rain", "key"),
    [
        ({"depth_layers": [2, 1]}, "depth_layers"),
        ({"depth_layers": [0, 9]}, "depth_layers"),
        ({"depth_length": [0.5, 40.0]}, "depth_length"),
        ({"depth_width": [1.0]}, "depth_width"),
        ({"depth_blur": [0.0, 9.0]}, "depth_blur"),
        ({"depth_intensity": [0.2, 1.5]}, "depth_intensity"),
        ({"depth_density": [0.0, 0.001]}, "depth_density"),
        ({"depth_exposure": [2.0, 1.0]}, "depth_exposure"),
        ({"accumulation_probability": 2.0}, "accumulation_probability"),
        ({"accumulation_near": [0.9, 1.1]}, "accumulation_near"),
        ({"accumulation_far": [0.0, 0.5]}, "accumulation_far"),
        ({"accumulation_horizon": [0.5, 1.0]}, "accumulation_horizon"),
        ({"accumulation_airlight": [0.6, 0.5]}, "accumulation_airlight"),
        ({"crisp_probability": 1.5}, "crisp_probability"),
        ({"light_tint": 1.0}, "light_tint"),
        ({"light_tint": -0.1}, "light_tint"),
    ],
)
def test_bad_depth_and_accumulation_settings_name_the_key(rain, key):
    with pytest.raises(ConfigError, match=rf"data\.labeled\.rain\.{key}"):
        config_from_dict({"data": {"labeled": {"rain": {"preset": "realistic", **rain}}}})


def test_far_and_near_pairs_may_fall_or_rise():
    rain = {"depth_layers": [1, 2], "depth_density": [0.004, 0.0001], "depth_length": [8, 80]}
    cfg = config_from_dict({"data": {"labeled": {"rain": rain}}})
    assert cfg.data.labeled.rain.depth_density == [0.004, 0.0001]


# --------------------------------------------------------------------------- backgrounds


def _photos(folder, count, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{seed}_{i}.png")
    return folder


def test_extra_clean_folders_join_the_training_backgrounds_never_the_holdout(tmp_path):
    clean = _photos(tmp_path / "clean", 5, seed=1)
    extra = [str(_photos(tmp_path / f"extra{k}", 3, seed=2 + k)) for k in range(2)]

    def data(extra_clean):
        labeled = {"clean": str(clean), "holdout": 2, "extra_clean": extra_clean}
        return config_from_dict({"data": {"labeled": labeled}}).data

    without, with_extra = data([]), data(extra)
    built = build_training_data(
        with_extra, batch_size=1, crop_size=16, seed=0, with_unlabeled=False
    )
    assert built.num_labeled == 3 + 6 and "extra1" in built.description
    assert (
        build_training_data(
            without, batch_size=1, crop_size=16, seed=0, with_unlabeled=False
        ).num_labeled
        == 3
    )

    def held_out(cfg):
        return [e["name"] for e in build_test_sets(cfg)["labeled_style"].as_numpy_iterator()]

    assert held_out(with_extra) == held_out(without)
    with pytest.raises(ConfigError, match=r"data\.labeled\.extra_clean"):
        config_from_dict({"data": {"labeled": {"pairs": "p", "extra_clean": extra}}})
    bench = with_extra.__class__(**{**with_extra.__dict__, "validation": {"b": extra[0]}})
    with pytest.raises(DataError, match=r"extra_clean\[0\]"):
        build_test_sets(bench)


def test_sample_grid_shows_the_new_options_with_set_keys(tmp_path, capsys):
    from moss_tf.data.rain_samples import main

    out = tmp_path / "grid.png"
    keys = ["depth_layers=[1,2]", "accumulation_probability=1", "clean_probability=0"]
    main(
        ["--streaks", "none", "--crop", "32", "--columns", "2", "--output", str(out)]
        + [arg for key in keys for arg in ("--set", key)]
    )
    assert np.asarray(Image.open(out)).shape == (4 * 32 + 3 * 4, 3 * 32 + 2 * 4, 3)
    with pytest.raises(ConfigError, match=r"data\.labeled\.rain\.depth_layers"):
        main(["--streaks", "none", "--set", "depth_layers=[3,1]", "--output", str(out)])
