"""``data.validation`` splits (rain made by others) and ``train.select_on`` (issue 29).

A tiny fake paired folder stands in for ../shared/data/dev_bench: the tests
need nothing outside the repository.
"""

from __future__ import annotations

import json
from math import inf

import numpy as np
import pytest
from conftest import TINY_MODEL
from PIL import Image

from moss_tf.commands import evaluate
from moss_tf.config import ConfigError, config_from_dict, load_config
from moss_tf.data import build_test_sets
from moss_tf.data.data_config import DataConfig
from moss_tf.errors import DataError
from moss_tf.train import checkpoints as ckpt
from moss_tf.train.callbacks import _below_floor
from moss_tf.train.stage import run_stage

FAST = [
    *(f"model.{key}={value}" for key, value in TINY_MODEL.items()),
    "train.batch_size=2",
    "train.crop_size=32",
    "train.log_every=1",
    "train.validate_every=1",
    "train.checkpoint_every=1",
    "train.image_every=0",
]


def _paired_folder(root, count=2, seed=0):
    """``root/rain/K.png`` + ``root/norain/K.png``: noisy copies of random images."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        clean = rng.integers(0, 256, (20 + 4 * k, 28, 3), dtype=np.uint8)
        noise = rng.integers(-40, 40, clean.shape)
        rainy = np.clip(clean.astype(int) + noise, 0, 255).astype(np.uint8)
        for sub, image in (("norain", clean), ("rain", rainy)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / sub / f"{k}.png")
    return root


def _data(**values) -> DataConfig:
    return config_from_dict({"data": values}).data


def test_validation_splits_come_after_the_held_out_splits_with_the_files_pixels(tmp_path):
    folder = _paired_folder(tmp_path / "bench", count=3)
    sets = build_test_sets(_data(validation={"bench": str(folder)}))
    assert list(sets) == ["labeled_style", "target_style", "bench"]
    examples = list(sets["bench"].as_numpy_iterator())
    assert [e["name"].decode() for e in examples] == ["0", "1", "2"]
    for example in examples:
        name = example["name"].decode()
        for key, sub in (("rainy", "rain"), ("clean", "norain")):
            pixels = np.asarray(Image.open(folder / sub / f"{name}.png"), np.float32)
            np.testing.assert_allclose(example[key], pixels / 127.5 - 1.0, atol=1e-6)


def test_validation_splits_alone_are_the_test_sets_of_real_pairs(tmp_path):
    train = _paired_folder(tmp_path / "train", seed=1)
    bench = _paired_folder(tmp_path / "bench", seed=2)
    cfg = _data(labeled={"pairs": str(train)}, validation={"bench": str(bench)})
    assert list(build_test_sets(cfg)) == ["bench"]


def test_a_validation_folder_that_is_or_holds_a_training_source_is_refused(tmp_path):
    bench = _paired_folder(tmp_path / "bench")
    for pairs, validation in ((bench, bench), (bench / "rain", bench), (bench, bench / "rain")):
        cfg = _data(labeled={"pairs": str(pairs)}, validation={"b": str(validation)})
        with pytest.raises(DataError, match=r"data\.validation\.b: .* training source data"):
            build_test_sets(cfg)


def test_validation_names_and_select_on_are_checked_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.validation\.light: the split name 'light'"):
        _data(
            labeled={"clean": "x", "holdout": 2},
            holdout_rain={"light": None},
            validation={"light": "y"},
        )
    with pytest.raises(ConfigError, match=r"data\.validation\.labeled_style"):
        _data(validation={"labeled_style": "y"})
    with pytest.raises(ConfigError, match=r"train\.select_on: must be distinct"):
        config_from_dict({"train": {"select_on": ["a", "a"]}})


def test_release_recipe_scores_dev_bench_and_chooses_on_it():
    cfg = load_config("release")
    assert sorted(cfg.data.validation) == ["rain12", "rain_cityscapes"]
    assert set(cfg.train.select_on) == set(cfg.data.validation)
    assert {"none", "light"} <= set(cfg.data.holdout_rain)  # rain-free and light splits kept
    transfer = load_config("release_transfer")
    assert not set(transfer.train.select_on) & set(transfer.data.validation)


def test_evaluate_scores_validation_splits_beside_the_config_splits_but_not_with_test(tmp_path):
    bench = _paired_folder(tmp_path / "bench")
    other = _paired_folder(tmp_path / "other", seed=3)
    cfg = load_config("demo", [f"data.validation.bench={bench}"])
    assert list(evaluate._test_sets(cfg, None)) == ["labeled_style", "target_style", "bench"]
    assert list(evaluate._test_sets(cfg, [str(other)])) == ["other"]


def _config(bench, *overrides):
    return load_config(
        "demo",
        [*FAST, f"data.validation.bench={bench}", "train.steps=4", *overrides],
    )


def test_best_checkpoint_is_chosen_on_the_select_on_splits_only(tmp_path):
    bench = _paired_folder(tmp_path / "bench")
    run = tmp_path / "run"
    summary = run_stage(_config(bench, "train.select_on=[bench]"), "pretrain", run, verbose=False)
    history = summary["validation"]
    assert [row["step"] for row in history] == [1, 2, 3, 4]
    bench_psnr = [row["bench/psnr_rgb"] for row in history]
    assert summary["best_mean_psnr_rgb"] == pytest.approx(max(bench_psnr))
    best = ckpt.read_meta(run / "pretrain" / "checkpoints" / "best.npz")
    assert best["step"] == history[int(np.argmax(bench_psnr))]["step"]
    assert json.loads((run / "pretrain" / "summary.json").read_text())["validation"] == history
    # Every split is still scored and logged.
    assert {"labeled_style/psnr_rgb", "target_style/psnr_rgb"} <= set(history[0])


def test_select_floor_keeps_validations_under_a_floor_from_being_chosen(tmp_path):
    bench = _paired_folder(tmp_path / "bench")
    free = _config(bench, "train.select_on=[bench]")
    history = run_stage(free, "pretrain", tmp_path / "free", verbose=False)["validation"]
    target = [row["target_style/psnr_rgb"] for row in history]
    floor = sorted(target)[1]  # half the validations (or more) fall under it
    eligible = [i for i, psnr in enumerate(target) if psnr >= floor]
    assert 0 < len(eligible) < len(history)
    run = tmp_path / "floored"
    floored = _config(
        bench, "train.select_on=[bench]", f"train.select_floor={{target_style: {floor}}}"
    )
    summary = run_stage(floored, "pretrain", run, verbose=False)
    assert [row["target_style/psnr_rgb"] for row in summary["validation"]] == target
    bench_psnr = [history[i]["bench/psnr_rgb"] for i in eligible]
    assert summary["best_mean_psnr_rgb"] == pytest.approx(max(bench_psnr))
    best = ckpt.read_meta(run / "pretrain" / "checkpoints" / "best.npz")
    assert best["step"] == history[eligible[int(np.argmax(bench_psnr))]]["step"]


def test_a_floor_no_validation_meets_leaves_the_final_network_as_best(tmp_path, capsys):
    bench = _paired_folder(tmp_path / "bench")
    run = tmp_path / "run"
    cfg = _config(bench, "train.select_floor={bench: 1000.0}")
    summary = run_stage(cfg, "pretrain", run)
    said = capsys.readouterr().out.strip().splitlines()
    assert not (run / "pretrain" / "checkpoints" / "best.npz").exists()
    final = (run / "pretrain" / "final.weights.h5").read_bytes()
    assert (run / "pretrain" / "best.weights.h5").read_bytes() == final
    assert any("not eligible (train.select_floor): bench" in line for line in said)
    assert "none met train.select_floor" in said[-1]
    assert summary["best_mean_psnr_rgb"] == -np.inf


def test_select_on_a_split_that_does_not_exist_names_the_key_and_the_splits(tmp_path):
    bench = _paired_folder(tmp_path / "bench")
    with pytest.raises(ConfigError, match=r"train\.select_on: no validation split 'rain12'.*bench"):
        run_stage(_config(bench, "train.select_on=[rain12]"), "pretrain", tmp_path / "r")
    with pytest.raises(
        ConfigError, match=r"train\.select_floor: no validation split 'none'.*bench"
    ):
        run_stage(_config(bench, "train.select_floor={none: 35}"), "pretrain", tmp_path / "f")


def test_evaluate_per_image_numbers_match_the_split_means(tmp_path):
    import keras

    from moss_tf.config import save_config
    from moss_tf.nn.network import MOSSNet

    keras.utils.set_random_seed(1)
    net = MOSSNet(**TINY_MODEL)
    net.build()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(config_from_dict({"name": "t", "model": TINY_MODEL}), run_dir / "config.yaml")
    net.save_weights(run_dir / "model.weights.h5")
    bench = _paired_folder(tmp_path / "bench", count=3)
    out = tmp_path / "r.json"
    args = ["--run-dir", str(run_dir), "--test", str(bench), "--json", str(out), "--quiet"]
    assert evaluate.main([*args, "--per-image"]) == 0
    results = json.loads(out.read_text())
    rows = results["images"]["bench"]
    assert [row["name"] for row in rows] == ["0", "1", "2"]
    for key in ("psnr_rgb", "ssim_y", "input_psnr_rgb"):
        mean = np.mean([row[key] for row in rows])
        assert results["splits"]["bench"][key] == pytest.approx(mean, abs=1e-9)
    assert evaluate.main(args) == 0 and "images" not in json.loads(out.read_text())
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--per-image"])  # per-image numbers go into --json


def _scores(**splits):
    return {
        name: {"psnr_rgb": out, "input_psnr_rgb": rainy} for name, (out, rainy) in splits.items()
    }


def test_an_input_floor_keeps_a_validation_that_does_not_improve_on_the_rain_from_being_chosen():
    floors = {"none": 35.0, "light": "input", "heavy": "input"}
    assert _below_floor(_scores(none=(36, inf), light=(33.2, 33.1), heavy=(22, 16)), floors) == []
    under = _below_floor(_scores(none=(34, inf), light=(33.1, 33.1), heavy=(22, 16)), floors)
    assert under == ["none 34.00 < 35.00", "light 33.10 <= input 33.10"]


def test_an_input_floor_on_rain_free_photos_or_an_unknown_word_is_refused_by_name():
    with pytest.raises(ConfigError, match=r'train\.select_floor\.none: "input" needs a rained'):
        _below_floor(_scores(none=(40, inf)), {"none": "input"})
    with pytest.raises(
        ConfigError, match=r'select_floor=\{light: inputs\}: must be a PSNR in dB or "input"'
    ):
        load_config("demo", ["train.select_floor={light: inputs}"])
    with pytest.raises(ConfigError, match=r'select_floor=\{none: input\}: "input" needs a rained'):
        load_config("release_sharp", ["train.select_floor={none: input}"])
