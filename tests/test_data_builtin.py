"""The built-in demo data and the shipped data configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moss_tf.config import load_config
from moss_tf.data import DataConfig, build_test_sets, build_training_data, read_image
from moss_tf.data import builtin as builtin_data
from moss_tf.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "moss_tf" / "configs"


@pytest.fixture(scope="module")
def demo_tests():
    return {
        split: list(dataset.as_numpy_iterator())
        for split, dataset in build_test_sets(load_config(CONFIGS / "demo.yaml").data).items()
    }


def test_builtin_photographs_ship_with_scikit_image_and_are_split_by_image():
    roles = [
        builtin_data.LABELED_PHOTOS,
        builtin_data.UNLABELED_PHOTOS,
        tuple(builtin_data.TEST_PHOTOS),
    ]
    names = [name for role in roles for name in role]
    assert len(names) == len(set(names))  # no photograph in two roles
    for path in builtin_data.builtin_paths(names):  # files inside the installed package
        assert path.is_file() and path.parent == builtin_data.builtin_dir()
    for path in builtin_data.builtin_paths(names[: -len(builtin_data.TEST_PHOTOS)]):
        assert min(read_image(path).shape[:2]) >= 300  # crops up to 300 px work


def test_demo_config_spells_out_the_default_data():
    demo, default = load_config(CONFIGS / "demo.yaml").data, DataConfig()
    assert demo.labeled.is_builtin and default.labeled.is_builtin
    assert demo.unlabeled.clean == "builtin" and default.unlabeled.clean is None  # None = builtin
    assert demo.labeled.rain == default.labeled.rain
    assert demo.unlabeled.rain == default.unlabeled.rain
    assert demo.labeled.rain != demo.unlabeled.rain


def test_demo_test_splits(demo_tests):
    assert sorted(demo_tests) == ["labeled_style", "target_style"]
    first, second = demo_tests["labeled_style"], demo_tests["target_style"]
    assert len(first) == len(second) == 8
    for a, b in zip(first, second, strict=True):
        assert a["name"] == b["name"]
        assert a["rainy"].shape == a["clean"].shape == (128, 128, 3)
        for image in (a["rainy"], a["clean"], b["rainy"]):
            assert image.dtype == np.float32 and -1.0 <= image.min() <= image.max() <= 1.0
        np.testing.assert_array_equal(a["clean"], b["clean"])  # same backgrounds
        assert (a["rainy"] - a["clean"]).mean() > 0.02  # rain is visible
        assert np.abs(a["rainy"] - b["rainy"]).mean() > 0.05  # the two styles differ


def _correlation(rain: np.ndarray, dy: int, dx: int) -> float:
    moved = np.roll(rain, (dy, dx), axis=(0, 1))
    return float(np.corrcoef(rain[8:-8, 8:-8].ravel(), moved[8:-8, 8:-8].ravel())[0, 1])


def test_demo_styles_fall_at_different_angles(demo_tests):
    def mean_correlation(split, dy, dx):
        values = []
        for item in demo_tests[split]:
            rain = (item["rainy"] - item["clean"]).mean(axis=-1)
            values.append(_correlation(rain, dy, dx))
        return np.mean(values)

    # Style A is near-vertical (within 5 degrees); style B leans right by 8-18.
    assert mean_correlation("labeled_style", 3, 0) > mean_correlation("target_style", 3, 0)
    assert mean_correlation("target_style", 3, -2) > mean_correlation("labeled_style", 3, -2)


def test_demo_test_pairs_are_deterministic(demo_tests):
    again = build_test_sets(DataConfig())
    for split, items in demo_tests.items():
        for before, after in zip(items, again[split].as_numpy_iterator(), strict=True):
            np.testing.assert_array_equal(before["rainy"], after["rainy"])


def test_demo_training_streams():
    data = build_training_data(
        DataConfig(), batch_size=4, crop_size=32, seed=0, with_unlabeled=True
    )
    assert (data.num_labeled, data.num_unlabeled) == (7, 6)
    rainy, clean = next(iter(data.labeled))
    unlabeled = next(iter(data.unlabeled))
    for images in (rainy, clean, unlabeled):
        assert images.shape == (4, 32, 32, 3)
        assert -1.0 <= float(np.min(images)) <= float(np.max(images)) <= 1.0
    assert float(np.mean(rainy - clean)) > 0.02


def test_rain200h_configs_say_which_key_to_set():
    cfg = load_config(CONFIGS / "rain200h_10pct.yaml")
    assert cfg.data.labeled.fraction == 0.1
    assert load_config(CONFIGS / "rain200h_40pct.yaml").data.labeled.fraction == 0.4
    if Path(cfg.data.labeled.pairs).exists():
        pytest.skip("Rain200H is present; nothing is missing")
    with pytest.raises(ConfigError, match=r"data\.labeled\.pairs: .*Rain200H/train.* not found"):
        build_training_data(cfg.data, batch_size=1, crop_size=64, seed=0, with_unlabeled=True)


def test_ddn_sirr_config_on_the_development_data(shared_dir):
    data_dir = shared_dir / "data"
    if not (data_dir / "bsd300_clean").is_dir():
        pytest.skip(f"{data_dir} has no bsd300_clean")
    cfg = load_config(CONFIGS / "ddn_sirr.yaml").data
    data = build_training_data(cfg, batch_size=4, crop_size=64, seed=0, with_unlabeled=True)
    clean_count = len(list((data_dir / "bsd300_clean").glob("*.jpg")))
    assert data.num_labeled == clean_count - cfg.labeled.holdout
    assert data.num_unlabeled == len(list((data_dir / "sirr_real_rainy").iterdir()))
    rainy, clean = next(iter(data.labeled))
    assert rainy.shape == (4, 64, 64, 3) and float(np.mean(rainy - clean)) > 0.0
    assert next(iter(data.unlabeled)).shape == (4, 64, 64, 3)
    tests = build_test_sets(cfg)
    assert list(tests) == ["labeled_style"]
    items = list(tests["labeled_style"].as_numpy_iterator())
    assert len(items) == cfg.labeled.holdout
    assert sorted(items[0]["rainy"].shape) == [3, 321, 481]  # BSDS300, full size


def test_release_config_scores_the_holdout_per_rain_density(shared_dir):
    data_dir = shared_dir / "data"
    for needed in ("bsd300_clean", "dev_bench"):
        if not (data_dir / needed).is_dir():
            pytest.skip(f"{data_dir} has no {needed}")
    # Training leaves most images clean here; the labeled_style split none.
    overrides = ["data.labeled.holdout=2", "data.labeled.rain.clean_probability=0.9"]
    cfg = load_config(CONFIGS / "release.yaml", overrides).data
    tests = {name: list(split.as_numpy_iterator()) for name, split in build_test_sets(cfg).items()}
    held_out = ["labeled_style", "none", "light", "medium", "heavy"]
    assert list(tests) == [*held_out, *cfg.validation]  # then dev_bench: rain made by others
    assert all(len(tests[name]) == 2 for name in held_out)
    assert all(np.array_equal(i["rainy"], i["clean"]) for i in tests["none"])
    assert not any(np.array_equal(i["rainy"], i["clean"]) for i in tests["labeled_style"])

    def error(split):
        return np.mean([np.mean(np.abs(i["rainy"] - i["clean"])) for i in tests[split]])

    assert 0.0 < error("light") < error("medium") < error("heavy")
