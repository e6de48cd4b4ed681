"""tf.data pipelines: training streams and test sets from folders, bad inputs, config keys."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from moss_tf.config import config_from_dict
from moss_tf.data import (
    DataConfig,
    DataError,
    ImageError,
    build_test_sets,
    build_training_data,
)
from moss_tf.errors import ConfigError


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _paired_folder(root: Path, count: int, size=(40, 48), seed=0) -> Path:
    """rain/ + norain/ where each rainy image is the colour negative of its clean one."""
    rng = np.random.default_rng(seed)
    for n in range(1, count + 1):
        clean = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        _write(root / "norain" / f"norain-{n}.png", clean)
        _write(root / "rain" / f"norain-{n}.png", 255 - clean)
    return root


def _data(**values) -> DataConfig:
    return config_from_dict({"data": values}).data


def _take(dataset, batches):
    return [
        tuple(t.numpy() for t in b) if isinstance(b, tuple) else b.numpy()
        for b in dataset.take(batches)
    ]


def test_paired_crops_are_aligned_in_range_and_deterministic(tmp_path):
    cfg = _data(labeled={"pairs": str(_paired_folder(tmp_path / "set", 3))})
    data = build_training_data(cfg, batch_size=4, crop_size=16, seed=0, with_unlabeled=False)
    assert data.unlabeled is None and data.num_labeled == 3
    batches = _take(data.labeled, 5)  # more crops than images: the stream repeats
    for rainy, clean in batches:
        assert rainy.shape == clean.shape == (4, 16, 16, 3) and rainy.dtype == np.float32
        assert rainy.min() >= -1.0 and rainy.max() <= 1.0
        # Same window and flip: the negative maps to -x in [-1, 1].
        np.testing.assert_allclose(rainy, -clean, atol=1e-6)
    # A second iterator of the same dataset (Keras's fit makes one under a
    # distribution strategy) sees the same batches, epoch orders included.
    for first, second in zip(batches, _take(data.labeled, 5), strict=True):
        np.testing.assert_array_equal(second[1], first[1])
    again = build_training_data(cfg, batch_size=4, crop_size=16, seed=0, with_unlabeled=False)
    np.testing.assert_array_equal(batches[4][1], _take(again.labeled, 5)[4][1])
    other = build_training_data(cfg, batch_size=4, crop_size=16, seed=1, with_unlabeled=False)
    assert not np.array_equal(batches[0][1], _take(other.labeled, 1)[0][1])
    resumed = build_training_data(
        cfg, batch_size=4, crop_size=16, seed=0, with_unlabeled=False, start_step=3
    )
    np.testing.assert_array_equal(_take(resumed.labeled, 1)[0][1], batches[3][1])


def test_labeled_fraction_makes_the_rest_unlabeled(tmp_path):
    cfg = _data(labeled={"pairs": str(_paired_folder(tmp_path / "set", 10)), "fraction": 0.4})
    data = build_training_data(cfg, batch_size=2, crop_size=16, seed=0, with_unlabeled=True)
    assert (data.num_labeled, data.num_unlabeled) == (4, 6)
    assert "4 of 10 pairs" in data.description and "6 rainy inputs" in data.description
    unlabeled = next(iter(data.unlabeled)).numpy()
    assert unlabeled.shape == (2, 16, 16, 3) and -1.0 <= unlabeled.min() <= unlabeled.max() <= 1.0


def test_real_rainy_folder_and_synthetic_target_domain(tmp_path):
    rng = np.random.default_rng(1)
    for n in range(3):
        _write(tmp_path / "real" / f"{n}.jpg", rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
        _write(tmp_path / "clean" / f"{n}.png", np.full((30, 30, 3), 60, np.uint8))
    cfg = _data(
        labeled={"pairs": str(_paired_folder(tmp_path / "set", 2))},
        unlabeled={"rainy": str(tmp_path / "real")},
    )
    data = build_training_data(cfg, batch_size=2, crop_size=16, seed=0, with_unlabeled=True)
    assert data.num_unlabeled == 3

    cfg = _data(labeled={"clean": str(tmp_path / "clean")}, unlabeled={"clean": "builtin"})
    data = build_training_data(cfg, batch_size=2, crop_size=16, seed=0, with_unlabeled=True)
    rainy, clean = next(iter(data.labeled))
    # Clean crops are flat grey (60 -> -0.53); synthetic rain brightens them.
    np.testing.assert_allclose(clean.numpy(), 60 / 127.5 - 1, atol=1e-6)
    assert float(tf.reduce_mean(rainy)) > float(tf.reduce_mean(clean)) + 0.01
    assert data.num_unlabeled == 6  # the built-in unlabeled photographs


def test_held_out_test_images_never_reach_the_unlabeled_set(tmp_path):
    for n in range(6):
        _write(tmp_path / "clean" / f"{n}.png", np.full((30, 30, 3), 40 * n, np.uint8))
        _write(tmp_path / "other" / f"{n}.png", np.full((30, 30, 3), 40 * n, np.uint8))
    # Light rain brightens a flat crop by far less than the 40 levels between files,
    # so a crop's grey level names its file.
    same = {"clean": str(tmp_path / "clean"), "rain": {"preset": "light"}}
    cfg = _data(labeled={"clean": str(tmp_path / "clean"), "holdout": 2}, unlabeled=same)
    data = build_training_data(cfg, batch_size=2, crop_size=16, seed=0, with_unlabeled=True)
    assert (data.num_labeled, data.num_unlabeled) == (4, 4)
    assert "the 2 held-out test images left out" in data.description
    test = build_test_sets(cfg)["target_style"].as_numpy_iterator()
    held = {int(item["name"]) for item in test}
    seen = {
        round((float(b.numpy().mean()) + 1) * 127.5 / 40) for b in data.unlabeled.unbatch().take(64)
    }
    assert len(held) == 2 and seen == set(range(6)) - held
    # Another folder holds none of the held-out files: all of it is unlabeled.
    cfg = _data(
        labeled={"clean": str(tmp_path / "clean"), "holdout": 2},
        unlabeled={**same, "clean": str(tmp_path / "other")},
    )
    data = build_training_data(cfg, batch_size=2, crop_size=16, seed=0, with_unlabeled=True)
    assert data.num_unlabeled == 6 and "left out" not in data.description


def test_size_mismatch_and_small_images_name_the_file(tmp_path, caplog):
    root = _paired_folder(tmp_path / "set", 3)
    _write(root / "rain" / "norain-2.png", np.zeros((20, 20, 3), np.uint8))
    cfg = _data(labeled={"pairs": str(root)})
    with pytest.raises(ImageError, match=r"norain-2.png is 20x20 but its clean partner"):
        build_training_data(cfg, batch_size=1, crop_size=16, seed=0, with_unlabeled=False)
    with pytest.raises(ImageError, match=r"norain-1.png: 48x40 is smaller than the 64x64 crop"):
        build_training_data(
            _data(labeled={"pairs": str(_paired_folder(tmp_path / "ok", 1))}),
            batch_size=1,
            crop_size=64,
            seed=0,
            with_unlabeled=False,
        )

    cfg = _data(labeled={"pairs": str(root)}, on_bad_image="skip")
    with caplog.at_level(logging.WARNING, logger="moss_tf.data"):
        data = build_training_data(cfg, batch_size=1, crop_size=16, seed=0, with_unlabeled=False)
    assert data.num_labeled == 2
    assert "norain-2.png" in caplog.text and "skipped 1 of 3" in caplog.text


def test_unreadable_file_errors_or_is_skipped(tmp_path, caplog):
    folder = tmp_path / "real"
    for n in range(2):
        _write(folder / f"{n}.png", np.zeros((32, 32, 3), np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    base = {"labeled": {"pairs": str(_paired_folder(tmp_path / "set", 1))}}
    cfg = _data(**base, unlabeled={"rainy": str(folder)})
    with pytest.raises(ImageError, match=r"broken\.png"):
        build_training_data(cfg, batch_size=1, crop_size=16, seed=0, with_unlabeled=True)
    cfg = _data(**base, unlabeled={"rainy": str(folder)}, on_bad_image="skip")
    with caplog.at_level(logging.WARNING, logger="moss_tf.data"):
        data = build_training_data(cfg, batch_size=1, crop_size=16, seed=0, with_unlabeled=True)
    assert data.num_unlabeled == 2 and "broken.png" in caplog.text


def test_missing_and_empty_sources_are_clear(tmp_path):
    cfg = _data(labeled={"pairs": "no/such/folder"})
    with pytest.raises(ConfigError, match=r"data\.labeled\.pairs: 'no/such/folder' not found"):
        build_training_data(cfg, batch_size=1, crop_size=16, seed=0, with_unlabeled=False)
    (tmp_path / "empty").mkdir()
    cfg = _data(unlabeled={"rainy": str(tmp_path / "empty")})
    with pytest.raises(DataError, match="no images"):
        build_training_data(cfg, batch_size=1, crop_size=16, seed=0, with_unlabeled=True)
    cfg = _data(labeled={"pairs": str(_paired_folder(tmp_path / "set", 1))})
    with pytest.raises(DataError, match="no unlabeled images"):
        build_training_data(cfg, batch_size=1, crop_size=16, seed=0, with_unlabeled=True)
    with pytest.raises(DataError, match="no test set"):
        build_test_sets(cfg)


def test_memory_limit_is_enforced_with_advice(tmp_path):
    cfg = _data(
        labeled={"pairs": str(_paired_folder(tmp_path / "set", 2, size=(600, 600)))},
        memory_limit_mb=1,
        load="memory",  # the default, auto, would stream them instead
    )
    with pytest.raises(DataError, match=r"memory_limit_mb=1; set data.load=stream"):
        build_training_data(cfg, batch_size=1, crop_size=16, seed=0, with_unlabeled=False)


def test_test_folder_gives_named_finite_pairs_in_model_range(tmp_path):
    root = tmp_path / "ddn_test"
    rng = np.random.default_rng(2)
    for k in range(1, 21):
        clean = rng.integers(0, 256, (24 + k, 32, 3), dtype=np.uint8)
        _write(root / "norain" / f"input{k}.png", clean)
        _write(root / "rain" / f"input{k}.png", 255 - clean)
    sets = build_test_sets(_data(test=str(root)))
    assert sorted(sets) == ["dense", "sparse"]
    items = list(sets["dense"])
    assert [i["name"].numpy().decode() for i in items] == [f"input{k}" for k in range(1, 11)]
    for k, item in enumerate(items, start=1):
        assert item["rainy"].shape == item["clean"].shape == (24 + k, 32, 3)
        np.testing.assert_allclose(item["rainy"], -item["clean"], atol=1e-6)
    assert len(list(sets["sparse"])) == 10


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"on_bad_image": "ignore"}, "data.on_bad_image"),
        ({"labeled": {"pairs": "x", "clean": "y"}}, "data.labeled.pairs"),
        ({"labeled": {"pairs": "x", "fraction": 0.0}}, "data.labeled.fraction"),
        ({"labeled": {"clean": "x", "fraction": 0.5}}, "data.labeled.fraction"),
        ({"unlabeled": {"rainy": "x", "clean": "y"}}, "data.unlabeled.rainy"),
        ({"max_side": 4}, "data.max_side"),
        ({"labeled": {"pairs": "x"}, "test": 3}, "data.test"),
        ({"shuffle": True}, "data.shuffle"),
    ],
)
def test_bad_data_config_names_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict({"data": values})
