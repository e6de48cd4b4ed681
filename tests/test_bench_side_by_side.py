"""The side-by-side benchmark's plan and table (no timing is asserted)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.__main__ import inference_rows, scoring_note
from bench.side_by_side import Round, measurements, report, side_by_side_rows
from moss_tf.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _args(**overrides):
    values = {"quick": False, "paper": False, "threads": 2, "paper_semi_batch": 4, "rounds": 2}
    return argparse.Namespace(**{**values, **overrides})


def test_each_moss_measurement_runs_right_before_its_reference_with_the_same_setting():
    plan = measurements(_args(paper=True))
    assert plan[0].kind == "matmul_peak"
    assert {m.params["threads"] for m in plan} == {2}
    trainings = [m for m in plan if "training" in m.kind]
    for ours, reference in zip(trainings[::2], trainings[1::2], strict=True):
        assert (ours.kind, reference.kind) == ("training", "reference_training")
        size = dict(override.split("=") for override in ours.params["overrides"])
        assert int(size["train.batch_size"]) == reference.params["batch_size"]
        assert int(size["train.crop_size"]) == reference.params["crop_size"]
        assert ours.params["stage"] == reference.params["stage"]
        # the same arithmetic: the reference does not average weights
        load_config(ours.params["config"], ours.params["overrides"])
        assert size["train.weight_average"] == "0"
    settings = {(m.params["stage"], m.params["batch_size"]) for m in trainings[1::2]}
    assert settings == {("pretrain", 8), ("semi", 8), ("pretrain", 32), ("semi", 4)}
    assert not any("paper" in m.key for m in measurements(_args(paper=False)))


def _round(ours_step, reference_step, ours_512, reference_512, peak):
    flops = [{"size": 512, "flops": {"Conv2D": 80e9}}, {"size": 1024, "flops": {"Conv2D": 320e9}}]
    return Round(
        {
            "peak": {"median_gflops": peak, "cores_used": 2.0},
            "ours/inference/keras": {
                "latency": [{"size": 512, "median_s": ours_512, "cores_used": 1.9}],
                "forward_flops": flops,
            },
            "ours/inference/savedmodel": {"error": "exit code -9\n..."},
            "reference/inference": {
                "latency": [{"size": 512, "median_s": reference_512, "cores_used": 1.5}]
            },
            "ours/training/8x64/pretrain": {
                "seconds_per_step": ours_step,
                "step_flops": {"Conv2D": 30e9},
                "cores_used": 1.8,
            },
            "reference/training/8x64/pretrain": {
                "seconds_per_step": reference_step,
                "cores_used": 1.7,
            },
        }
    )


def test_ratios_are_taken_within_each_round_and_rates_are_shares_of_the_peak():
    # Round 2 ran on a machine twice as slow: within-round ratios stay 1.5 and 2.0.
    rounds = [_round(0.2, 0.3, 0.8, 1.6, 100.0), _round(0.4, 0.6, 1.6, 3.2, 50.0)]
    rows = {row[0]: row for row in side_by_side_rows(rounds)}
    step = rows["pretrain step, batch 8 × 64²"]
    assert step[2] == "0.300 (0.200–0.400)" and step[3] == "0.450 (0.300–0.600)"
    assert step[4] == "1.50 (1.50–1.50)×"
    # 30 GFLOP in a median 0.3 s = 100 GFLOP/s, against a median peak of 75.
    assert step[5:7] == ["100", "133%"]
    keras = rows["one 512² image, Keras graph"]
    assert keras[1] == "80.0" and keras[4] == "2.00 (2.00–2.00)×"
    assert rows["one 512² image, SavedModel"][2] == "failed"
    assert not any("1024" in title for title in rows)  # no side measured at 1024²
    text = report(rounds, threads=2)
    assert "2 alternating round(s)" in text and "2 threads each side" in text
    assert "75 (50–100) GFLOP/s" in text


def test_scoring_note_gives_images_per_second_of_the_network_and_of_scoring():
    result = {
        "images": 100,
        "height": 321,
        "width": 481,
        "network_s": 50.0,
        "other_s": 20.0,
    }
    note = scoring_note(result)
    assert "network 2.00 images/s" in note and "0.200 s per image (5.0 images/s)" in note


def test_a_tiled_savedmodel_row_keeps_its_ratio_but_claims_no_rate():
    # Above the export's tile the SavedModel runs tiles and two passes: the
    # whole-image GFLOP count does not describe its work.
    latency = {"size": 1024, "median_s": 2.0, "cores_used": 2.0}
    flops = [{"size": 1024, "flops": {"Conv2D": 320e9}}]
    round_ = Round(
        {
            "ours/inference/keras": {
                "latency": [{**latency, "median_s": 1.0}],
                "forward_flops": flops,
            },
            "ours/inference/savedmodel": {"latency": [{**latency, "tiled": True}]},
            "reference/inference": {"latency": [{**latency, "median_s": 4.0}]},
        }
    )
    rows = {row[0]: row for row in side_by_side_rows([round_])}
    whole = rows["one 1024² image, Keras graph"]
    assert whole[4] == "4.00×" and whole[5] == "320"
    tiled = rows["one 1024² image, SavedModel, tiled"]
    assert tiled[4] == "2.00×"
    assert tiled[5:7] == ["–", "–"] and tiled[7] == "80"  # the reference's rate stays
    assert "Tiled: the SavedModel serves" in report([round_], threads=2)
    keras, saved = (
        round_.results["ours/inference/keras"],
        round_.results["ours/inference/savedmodel"],
    )
    (row,) = inference_rows(keras, saved)
    assert row[0] == "1024 × 1024" and row[4:6] == ["320", "–"]
