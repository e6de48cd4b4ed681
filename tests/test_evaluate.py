"""Evaluation: per-split and overall numbers, the table, JSON, panels, and the CLI."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_MODEL
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from moss_tf.commands import evaluate as evaluate_cli
from moss_tf.config import config_from_dict, save_config
from moss_tf.infer import metrics
from moss_tf.infer import scoring as evaluation
from moss_tf.infer.derain import Derainer
from moss_tf.infer.scoring import RESULT_KEYS, evaluate, format_table, write_json
from moss_tf.nn.network import MOSSNet

ISSUE_KEYS = {
    "n",
    "psnr_rgb",
    "ssim_rgb",
    "psnr_y",
    "ssim_y",
    "input_psnr_rgb",
    "input_ssim_rgb",
    "input_psnr_y",
    "input_ssim_y",
}


@pytest.fixture(scope="module")
def net():
    keras.utils.set_random_seed(5)
    model = MOSSNet(**TINY_MODEL)
    model.build()
    return model


def _pairs(count, seed):
    """uint8 (rainy, clean) pairs: clean texture, rainy = clean plus bright streaks."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        height, width = rng.integers(24, 40, size=2)
        yy, xx = np.mgrid[:height, :width]
        clean = (128 + 80 * np.sin(xx / 5.0 + rng.random()) * np.cos(yy / 7.0))[..., None]
        clean = np.clip(clean + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)
        streaks = (rng.random((height, width)) < 0.05)[..., None] * 120
        rainy = np.clip(clean.astype(int) + streaks, 0, 255).astype(np.uint8)
        pairs.append((rainy, clean))
    return pairs


def _dataset(pairs, prefix):
    """The unbatched dicts build_test_sets yields, from uint8 pairs."""

    def generate():
        for i, (rainy, clean) in enumerate(pairs):
            yield {
                "name": f"{prefix}{i}.png",
                "rainy": rainy / np.float32(127.5) - 1,
                "clean": clean / np.float32(127.5) - 1,
            }

    spec = tf.TensorSpec([None, None, 3], tf.float32)
    signature = {"name": tf.TensorSpec([], tf.string), "rainy": spec, "clean": spec}
    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def test_evaluate_reports_each_split_and_overall_with_the_issue_keys(net, tmp_path):
    splits = {"dense": _pairs(3, seed=0), "sparse": _pairs(2, seed=1)}
    sets = {name: _dataset(pairs, name) for name, pairs in splits.items()}
    results = evaluate(Derainer(net), sets, output_dir=tmp_path / "out", progress=False)

    assert set(results["splits"]) == {"dense", "sparse"}
    for name, pairs in splits.items():
        row = results["splits"][name]
        assert set(row) == ISSUE_KEYS and tuple(row) == RESULT_KEYS
        assert row["n"] == len(pairs)
        # The rainy input's PSNR, independently from scikit-image.
        want = np.mean([peak_signal_noise_ratio(c, r, data_range=255) for r, c in pairs])
        assert row["input_psnr_rgb"] == pytest.approx(want, abs=1e-9)
        assert -1 <= row["ssim_rgb"] <= 1 and 0 < row["input_ssim_y"] <= 1
    overall = results["overall"]
    assert overall["n"] == 5
    weighted = sum(r["n"] * r["psnr_y"] for r in results["splits"].values()) / 5
    assert overall["psnr_y"] == pytest.approx(weighted, abs=1e-9)

    # The saved (rounded) outputs reproduce the community-convention numbers.
    saved = [
        np.asarray(Image.open(tmp_path / "out" / "sparse" / "derained" / f"sparse{i}.png"))
        for i in range(2)
    ]
    cleans = [clean for _, clean in splits["sparse"]]
    psnr_y = np.mean([metrics.psnr_y(d, c) for d, c in zip(saved, cleans, strict=True)])
    assert results["splits"]["sparse"]["psnr_y"] == pytest.approx(psnr_y, abs=1e-9)

    rainy, clean = splits["sparse"][1]
    derained = saved[1]
    panel = np.asarray(Image.open(tmp_path / "out" / "sparse" / "panels" / "sparse1.png"))
    assert derained.shape == clean.shape
    width = clean.shape[1]
    assert panel.shape == (clean.shape[0], 3 * width + 8, 3)
    np.testing.assert_array_equal(panel[:, :width], rainy)
    np.testing.assert_array_equal(panel[:, -width:], clean)
    np.testing.assert_array_equal(panel[:, width + 4 : 2 * width + 4], derained)

    table = format_table(results)
    for text in ("dense", "sparse", "overall", "PSNR-Y", "rainy input", "paper convention"):
        assert text in table
    assert f"{results['splits']['dense']['psnr_rgb']:.2f}" in table
    assert json.loads(write_json(results, tmp_path / "r.json").read_text()) == results


def test_a_second_evaluation_reuses_the_rainy_input_scores(net, monkeypatch):
    pairs = _pairs(3, seed=7)
    scored = []
    real_image_metrics = evaluation.image_metrics

    def counting(restored, clean, *, network_output):
        scored.append(network_output)
        return real_image_metrics(restored, clean, network_output=network_output)

    monkeypatch.setattr(evaluation, "image_metrics", counting)
    first = evaluate(Derainer(net), {"val": _dataset(pairs, "v")}, progress=False)
    second = evaluate(Derainer(net), {"val": _dataset(pairs, "v")}, progress=False)
    assert first == second
    # Outputs are scored every time, the three rainy inputs only the first time.
    assert scored.count(True) == 6 and scored.count(False) == 3
    # A different rainy image under the same name is scored afresh.
    changed = [(np.flipud(pairs[0][0]).copy(), pairs[0][1]), *pairs[1:]]
    third = evaluate(Derainer(net), {"val": _dataset(changed, "v")}, progress=False)
    assert scored.count(False) == 4
    assert third["splits"]["val"]["input_psnr_rgb"] != first["splits"]["val"]["input_psnr_rgb"]


def _run_dir(tmp_path, net):
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    save_config(config_from_dict({"name": "tiny", "model": TINY_MODEL}), run_dir / "config.yaml")
    net.save_weights(run_dir / "model.weights.h5")
    return run_dir


def test_cli_scores_a_ddn_test_folder_as_dense_and_sparse(net, tmp_path, capsys):
    folder = tmp_path / "ddn_test"
    for sub in ("rain", "norain"):
        (folder / sub).mkdir(parents=True)
    for k, (rainy, clean) in zip((1, 2, 11), _pairs(3, seed=2), strict=True):
        Image.fromarray(rainy).save(folder / "rain" / f"input{k}.png")
        Image.fromarray(clean).save(folder / "norain" / f"input{k}.png")
    run_dir = _run_dir(tmp_path, net)
    out_json = tmp_path / "results.json"
    code = evaluate_cli.main(
        ["--run-dir", str(run_dir), "--test", str(folder), "--json", str(out_json), "--quiet"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "dense" in printed and "sparse" in printed and "PSNR-Y" in printed
    results = json.loads(out_json.read_text())
    assert {name: row["n"] for name, row in results["splits"].items()} == {"dense": 2, "sparse": 1}
    assert set(results["splits"]["dense"]) == ISSUE_KEYS


def test_cli_without_a_trained_model_says_how_to_train(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert evaluate_cli.main(["--run-dir", "runs/demo"]) == 1
    error = capsys.readouterr().err
    assert "no trained model in runs/demo" in error
    assert "python train.py --stage pretrain" in error


def test_cli_derains_a_folder_of_photos(net, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (rainy, _) in enumerate(_pairs(2, seed=3)):
        Image.fromarray(rainy).save(photos / f"photo{i}.jpg")
    run_dir = _run_dir(tmp_path, net)
    out = tmp_path / "derained"
    code = evaluate_cli.main(
        ["--run-dir", str(run_dir), "--input", str(photos), "--output", str(out), "--quiet"]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["photo0.jpg", "photo1.jpg"]
    assert "2 derained image(s)" in capsys.readouterr().out
