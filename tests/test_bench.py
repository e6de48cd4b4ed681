"""The benchmark command's own logic: FLOP counting, tables, reference ratios, the worker.

No timing is asserted: speed figures belong to ``python -m bench``, not to tests.
"""

from __future__ import annotations

import argparse

import keras
import pytest
from conftest import TINY_MODEL

from bench.__main__ import (
    SECTIONS,
    parse_args,
    pipeline_rows,
    plan,
    report,
    training_rows,
)
from bench._worker import pipeline, training
from bench.common import Measurement, markdown_table, run_worker
from bench.flops import forward_flops, total_gflop
from moss_tf.config import load_config
from moss_tf.nn.network import MOSSNet

TINY_OVERRIDES = [f"model.{key}={value}" for key, value in TINY_MODEL.items()] + [
    "train.batch_size=2",
    "train.crop_size=16",
]


def conv_flops(side: int, kernel: int, in_channels: int, out_channels: int) -> int:
    """A 'same' convolution on a side x side map: a multiply and an add per MAC."""
    return 2 * side * side * kernel * kernel * in_channels * out_channels


def analytic_conv_flops(net: MOSSNet, side: int) -> int:
    """Conv2D FLOPs of MOSSNet on one side x side image, from docs/method.md §1 by hand."""

    def block(b, side):
        side = side * 2 if b.upsample else side
        mid = max(b.in_channels, b.out_channels)
        flops = conv_flops(side, 3, b.in_channels, mid) + conv_flops(side, 3, mid, b.out_channels)
        if b.in_channels != b.out_channels:
            flops += conv_flops(side, 1, b.in_channels, b.out_channels)
        return flops, side // 2 if b.downsample else side

    total = conv_flops(side, 3, 3, net.base_channels)  # head
    resolution = side
    for stage in net.encoder_stages:
        for b in stage:
            flops, resolution = block(b, resolution)
            total += flops
    for i, stage in enumerate(net.decoder_stages):
        for b in stage:
            flops, resolution = block(b, resolution)
            total += flops
        if i < len(net.fusions):  # gamma and beta from g, the gate alpha from f
            channels = net.fusions[i].channels
            total += 2 * conv_flops(resolution, 1, channels, channels)
            total += conv_flops(resolution, 1, channels, 1)
    return total + conv_flops(side, 3, net.base_channels, 3)  # tail


def test_flops_of_two_convolutions_match_the_textbook_count():
    net = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
            keras.layers.Conv2D(5, 1, use_bias=False),
        ]
    )
    counts = forward_flops(net, 12)
    assert counts == {"Conv2D": conv_flops(12, 3, 3, 8) + conv_flops(12, 1, 8, 5)}


def test_moss_flops_count_every_convolution_and_scale_with_the_pixels():
    net = MOSSNet(**TINY_MODEL)
    net.build()
    small, large = forward_flops(net, 16), forward_flops(net, 32)
    assert small["Conv2D"] == analytic_conv_flops(net, 16)
    assert large["Conv2D"] == analytic_conv_flops(net, 32) == 4 * small["Conv2D"]
    # The memory read and update are matrix products: counted too, not just the convolutions.
    assert small.get("MatMul", 0) + small.get("BatchMatMul", 0) > 0
    assert total_gflop(small) * 1e9 > small["Conv2D"]


def test_the_released_network_costs_what_its_architecture_says():
    net = MOSSNet()
    net.build()
    counts = forward_flops(net, 64)
    assert counts["Conv2D"] == analytic_conv_flops(net, 64)
    # ~19.8 GFLOP at 256 x 256 is what the README quotes: 1/16 of it at 64 x 64.
    assert total_gflop(counts) == pytest.approx(19.84 / 16, rel=0.01)


def test_markdown_table_lines_up_and_rejects_ragged_rows():
    table = markdown_table(["size", "seconds"], [["256", "0.2"], ["1024", "12.25"]])
    lines = table.splitlines()
    assert lines[0] == "| size | seconds |"
    assert lines[1] == "|:-----|--------:|"
    assert lines[3] == "| 1024 |   12.25 |"
    assert len({len(line) for line in lines}) == 1
    with pytest.raises(ValueError, match="2 cells"):
        markdown_table(["a", "b", "c"], [["1", "2"]])


def _fake_run() -> list[Measurement]:
    """Results as workers return them: 512 px in 0.8 s, 8 x 64 pretrain in 0.48 s."""
    return [
        Measurement(
            "inference/keras",
            "inference",
            {},
            "",
            {
                "latency": [{"size": 512, "median_s": 0.8, "cores_used": 2.0, "peak_rss_mb": 800}],
                "forward_flops": [{"size": 512, "flops": {"Conv2D": 78e9, "MatMul": 2e9}}],
            },
        ),
        Measurement("inference/savedmodel", "inference", {}, "", {"error": "exit code -9\n..."}),
        Measurement(
            "training/demo/pretrain",
            "training",
            {},
            "",
            {
                "stage": "pretrain",
                "batch_size": 8,
                "crop_size": 64,
                "seconds_per_step": 0.25,
                "step_flops": {"Conv2D": 18e9},
                "forward_flops_per_crop": {"Conv2D": 0.76e9},
                "cores_used": 2.0,
                "peak_rss_mb": 800.0,
            },
        ),
        Measurement("training/demo/semi", "training", {}, "", {"error": "exit code -9\n..."}),
        Measurement(
            "pipeline/demo",
            "pipeline",
            {"config": "configs/demo.yaml"},
            "",
            {
                "config": "configs/demo.yaml",
                "batch_size": 8,
                "crop_size": 64,
                "labeled_crops_per_s": 320.0,
                "semi_crops_per_s": 640.0,
                "build_s": 1.0,
                "cores_used": 1.0,
                "peak_rss_mb": 600.0,
            },
        ),
    ]


def test_report_shows_the_machine_the_conventions_and_marks_failures():
    info = {
        "cpu": "Test CPU",
        "cores": 2,
        "memory_gib": 8.0,
        "python": "3.11",
        "tensorflow": "2.x",
        "keras": "3.x",
        "date": "2025-01-01T00:00+00:00",
    }
    args = argparse.Namespace(quick=False, paper=True, threads=None, paper_semi_batch=4)
    args.only = set(SECTIONS)
    text = report(_fake_run(), info, args, "SIDE BY SIDE SECTION\n")
    assert "Test CPU, 2 cores, 8 GiB RAM" in text
    assert "`python -m bench --paper`" in text and "SIDE BY SIDE SECTION" in text
    # No speed-up against a figure measured elsewhere: ratios come from the side-by-side rounds.
    assert "× faster" not in text
    # 80 GFLOP in 0.8 s; the SavedModel failed, so its cells are dashes.
    assert "| 512 × 512  |  80.0 |           0.800 |              – |           100 |" in text
    assert "1024 × 1024" not in text  # sizes nobody measured have no row
    # The pretrain step graph holds 18 / (8 x 0.76) = 2.96 forward passes of the batch.
    assert "2.96× the forward FLOPs" in text
    assert "kept 1.0 to 2.0 of the 2 cores busy" in text and "other programs" in text
    # --only: the command says so, and sections it left out print no empty table.
    args.only = {"side-by-side"}
    text = report([], info, args, "SIDE BY SIDE SECTION\n")
    assert "`python -m bench --paper --only side-by-side`" in text
    assert "**Inference**" not in text and "**Training**" not in text


def test_training_and_pipeline_rows_compare_the_pipeline_with_what_training_consumes():
    run = _fake_run()
    rows = {(row[0], row[1]): row for row in training_rows(run)}
    demo = rows[("demo (configs/demo.yaml)", "pretrain")]
    assert demo[3:8] == ["0.250", "4.00", "32.0", "18.0", "72"]  # s, steps/s, crops/s, GFLOP
    assert rows[("demo (configs/demo.yaml)", "semi")][3].startswith("failed: exit code -9")
    step = next(m for m in run if m.key == "training/demo/pretrain")
    step.params["overrides"] = ["train.recompute=true"]  # named beside the stage
    assert training_rows(run)[0][1] == "pretrain, train.recompute=true"
    (pipeline,) = pipeline_rows(run)
    # Pretrain consumes 8 / 0.25 = 32 crops/s; the pipeline gives 320. Semi was not measured.
    assert pipeline[4:6] == ["10×", "–"]


def test_training_worker_counts_a_pretrain_step_as_about_three_forward_passes():
    result = training("configs/demo.yaml", "pretrain", TINY_OVERRIDES, min_steps=1, seconds=0.0)
    assert result["steps"] == 1 and result["seconds_per_step"] > 0
    forward = total_gflop(result["forward_flops_per_crop"]) * result["batch_size"]
    assert 2.5 < total_gflop(result["step_flops"]) / forward < 3.5
    assert result["peak_rss_mb"] >= result["baseline_rss_mb"] > 0


@pytest.mark.slow
def test_worker_process_reports_its_result_and_its_failure():
    ok = Measurement(
        "training/demo/semi",
        "training",
        {
            "config": "configs/demo.yaml",
            "stage": "semi",
            "overrides": TINY_OVERRIDES,
            "min_steps": 1,
            "seconds": 0.0,
        },
        "",
    )
    result = run_worker(ok)
    assert result["stage"] == "semi" and result["steps"] == 1
    assert result["wall_s"] > 0 and result["peak_rss_mb"] > 0
    bad = Measurement("pipeline/x", "pipeline", {"config": "configs/no_such.yaml"}, "")
    failed = run_worker(bad)
    assert failed["error"].startswith("exit code 1") and "no_such.yaml" in failed["error"]


def test_shard_bench_reports_both_sources_and_both_worker_inputs(capsys):
    from bench import bench_shards

    assert bench_shards.main(["--pairs", "3", "--seconds", "0.2", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "3 pairs of 512x384 JPEGs" in out and "into 1 shard(s)" in out
    for source in ("loose files", "shards"):
        (line,) = [x for x in out.splitlines() if x.strip().startswith(source) and "labeled" in x]
        assert float(line.split("labeled")[1].split()[0]) > 0
        (worker,) = [x for x in out.splitlines() if x.strip().startswith(source) and "worker" in x]
        assert worker.count("crops/s") == 2


def test_only_pipeline_with_pairs_times_the_folder_against_the_paper_steps(tmp_path):
    args = parse_args(["--only", "pipeline", "--pairs", str(tmp_path)])
    measurements = {m.key: m for m in plan(args)}
    assert all(key.startswith(("pipeline/", "training/paper/")) for key in measurements)
    folder = measurements["pipeline/pairs1"].params
    assert folder["config"] == "configs/ddn_sirr.yaml"
    assert f"data.labeled.pairs={tmp_path.resolve()}" in folder["overrides"]
    load_config(folder["config"], folder["overrides"])  # a config the worker accepts
    # Batch 32 x 256² semi needs recomputation to fit in a CPU machine's memory.
    assert measurements["training/paper/semi"].params["overrides"] == ["train.recompute=true"]
    assert measurements["training/paper/pretrain"].params["config"] == "configs/paper.yaml"
    # A paper-setting semi step takes far longer on a CPU than the other workers.
    assert measurements["training/paper/semi"].timeout_s > measurements["pipeline/demo"].timeout_s

    paper_step = {"stage": "pretrain", "batch_size": 32, "seconds_per_step": 16.0}
    streamed = {
        "config": "configs/ddn_sirr.yaml",
        "pairs": str(tmp_path),
        "batch_size": 32,
        "crop_size": 256,
        "labeled_crops_per_s": 20.0,
        "semi_crops_per_s": 30.0,
        "build_s": 2.0,
        "peak_rss_mb": 900.0,
    }
    run = [
        Measurement("training/paper/pretrain", "training", {}, "", paper_step),
        Measurement("pipeline/pairs1", "pipeline", {}, "", streamed),
    ]
    (row,) = pipeline_rows(run)
    assert row[0] == f"ddn_sirr.yaml with pairs {tmp_path}"
    # Pretrain consumes 32 / 16 = 2 crops/s; the folder's stream gives 20.
    assert row[4:6] == ["10×", "–"]


def test_pipeline_worker_streams_a_folder_given_as_an_override(tmp_path):
    from bench.bench_shards import generate_pairs

    folder = generate_pairs(tmp_path / "pairs", 2)
    overrides = [f"data.labeled.pairs={folder}", "data.labeled.clean=null", "data.load=stream"]
    overrides += ["train.batch_size=2", "train.crop_size=32"]
    result = pipeline("configs/demo.yaml", seconds=0.2, overrides=overrides)
    assert result["pairs"] == str(folder) and result["batch_size"] == 2
    assert result["labeled_crops_per_s"] > 0 and result["semi_crops_per_s"] > 0
