"""The moss-tf benchmark: how fast this machine runs inference, training and the input pipeline.

    pip install -e .[bench]                        # PyTorch (CPU) for the reference
    .venv/bin/python -m bench                      # everything (the run prints how long it took)
    .venv/bin/python -m bench --paper              # plus the paper setting side by side (long)
    .venv/bin/python -m bench --quick              # shorter timings, 2 rounds
    .venv/bin/python -m bench --json bench.json --markdown bench.md
    .venv/bin/python -m bench --only pipeline --pairs /data/DDN/train   # your data, paper setting

Prints the machine (CPU, cores, memory, TensorFlow, date), then runs each
measurement in a process of its own (``python -m bench._worker``), so that
each one's peak memory (max RSS, TensorFlow included) is its own:

0. side by side with the released network in PyTorch (:mod:`bench.side_by_side`):
   alternating rounds of moss-tf and the reference, ratios with their spread,
   and every row's GFLOP/s as a share of a float32 matmul peak measured in the
   same rounds (skipped, saying so, when PyTorch is not installed);
1. inference latency of one image at 256, 512 and 1024 px through the
   released-size network, as a Keras ``tf.function`` and as the exported
   SavedModel's ``serving_default`` (median of a few calls after a warm-up);
2. training seconds per step of ``trainer.train_step`` compiled with
   ``tf.function`` on one fixed synthetic batch, both stages, at the demo
   setting (configs/demo.yaml); the released network's steps are in the
   side-by-side table;
3. tf.data throughput (crops per second) of the demo data and, when
   ``../shared/data`` exists, the DDN-SIRR-like data, at each config's
   batch and crop size, next to what training consumes at that setting;
   ``--pairs DIR`` adds a folder of training pairs (e.g. DDN's), streamed as
   configs/ddn_sirr.yaml's labeled set at the paper setting; the paper
   setting's consumption comes from a ``pretrain`` step and a ``semi`` step
   (with ``train.recompute``, so that batch 32 × 256² fits) timed alone;
4. scoring: :func:`moss_tf.infer.scoring.evaluate` on 100 synthetic 481×321
   test pairs, seconds in the network and beyond it (PSNR/SSIM, the rainy
   baseline);
5. FLOPs counted by TensorFlow's profiler on the graphs that are timed
   (forward: per image; training: the whole ``train_step`` graph, i.e.
   forward, backward and optimizer), and the achieved GFLOP/s;
6. memory modes at inference and two-pass tiling (:mod:`bench.memory_modes`);
7. what the convolutions alone take (:mod:`bench.convolutions`): each
   convolution of the inference and training graphs run alone, against the
   whole graph and the matmul peak: the ceiling of the share of the peak
   (with ``--paper`` also at the paper setting).

Weights are random: speed does not depend on their values. Other programs
running at the same time slow every figure down; the load average at the
start is printed for that reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from bench import convolutions, memory_modes
from bench.common import (
    PAPER_TIMEOUT_S,
    REPO,
    Measurement,
    counted_gflop,
    describe_machine,
    failure_cell,
    fmt,
    machine_info,
    markdown_table,
    run_measurements,
)

SHARED_DATA = REPO.parent / "shared" / "data"

INFERENCE_SIZES = (256, 512, 1024)
#: What ``--only`` can choose, in the order they run.
SECTIONS = (
    "side-by-side",
    "inference",
    "training",
    "pipeline",
    "scoring",
    "memory",
    "convolutions",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter timings, inference at 256 and 512 px, 20 scoring images, 2 rounds",
    )
    parser.add_argument(
        "--rounds", type=int, help="side-by-side rounds (default 3; 2 with --quick)"
    )
    parser.add_argument(
        "--inference-sizes",
        type=int,
        nargs="+",
        default=[512, 1024],
        metavar="PX",
        help="image sides timed side by side (default 512 1024)",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="add the paper setting (32 x 256², semi at --paper-semi-batch) side by side: long",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument(
        "--markdown", metavar="FILE", help="also write the tables as markdown (for the README)"
    )
    parser.add_argument(
        "--threads", type=int, help="TensorFlow CPU threads (default: TensorFlow's, all cores)"
    )
    parser.add_argument(
        "--paper-semi-batch",
        type=int,
        default=4,
        help="batch of the paper-setting semi step with --paper (default 4: batch 32 at "
        "256 px needs about 33 GB on CPU)",
    )
    parser.add_argument(
        "--pairs",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of training pairs to time as the labeled stream at the paper setting "
        "(repeatable)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only these sections (repeatable; default all)",
    )
    args = parser.parse_args(argv)
    args.only = set(args.only or SECTIONS)
    if args.paper_semi_batch < 1:
        parser.error(f"--paper-semi-batch must be at least 1, got {args.paper_semi_batch}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


# ---------------------------------------------------------------- the plan


def plan(args, measured_sizes=()) -> list[Measurement]:
    """The measurements of the sections in ``args.only``, in order; inference leaves out
    ``measured_sizes`` (those the side-by-side rounds already timed)."""
    quick = args.quick
    seconds = 1.0 if quick else 2.0  # per training variant and per pipeline stream
    sections = {
        "inference": _inference_plan(quick, measured_sizes),
        "training": _training_plan(seconds),
        "pipeline": _pipeline_plan(args, seconds),
        "scoring": [
            Measurement(
                "scoring",
                "scoring",
                {"images": 20 if quick else 100},
                "evaluate() on 481×321 test pairs, network vs scoring",
            )
        ],
        "memory": memory_modes.plan(quick),  # issue 13: memory modes and two-pass tiling
        # issue 12: what is left to gain
        "convolutions": convolutions.plan(args.paper, paper_semi_batch=args.paper_semi_batch),
    }
    plan = [m for name in SECTIONS if name in args.only for m in sections.get(name, [])]
    for measurement in plan:
        if args.threads:
            measurement.params["threads"] = args.threads
    return plan


def _inference_plan(quick: bool, measured_sizes) -> list[Measurement]:
    sizes = [s for s in INFERENCE_SIZES if (not quick or s <= 512) and s not in measured_sizes]
    runs = 2 if quick else 3
    return [
        Measurement(
            "inference/keras",
            "inference",
            {"variant": "keras", "sizes": sizes, "flop_sizes": sizes, "runs": runs},
            f"inference, Keras graph, {'/'.join(map(str, sizes))} px",
        ),
        Measurement(
            "inference/savedmodel",
            "inference",
            {"variant": "savedmodel", "sizes": sizes, "flop_sizes": [], "runs": runs},
            f"inference, SavedModel serving_default, {'/'.join(map(str, sizes))} px",
        ),
    ]


def _training(setting, stage, config, overrides, seconds, min_steps, title) -> Measurement:
    params = {"config": config, "stage": stage, "overrides": overrides}
    params |= {"seconds": seconds, "min_steps": min_steps}
    return Measurement(f"training/{setting}/{stage}", "training", params, title)


def _training_plan(seconds: float) -> list[Measurement]:
    demo = "configs/demo.yaml"
    return [
        _training("demo", stage, demo, [], seconds, 3, f"training, demo, {stage}")
        for stage in ("pretrain", "semi")
    ]


def _pipeline_plan(args, seconds: float) -> list[Measurement]:
    """The pipelines, and the paper-setting steps whose consumption they are compared with."""
    pipelines = [("demo", "configs/demo.yaml", [], "configs/demo.yaml")]
    if SHARED_DATA.is_dir() and not args.quick:
        pipelines.append(("ddn_sirr", "configs/ddn_sirr.yaml", [], "configs/ddn_sirr.yaml"))
    for number, folder in enumerate(args.pairs, 1):
        pairs = [f"data.labeled.pairs={Path(folder).resolve()}", "data.labeled.clean=null"]
        pairs.append("data.labeled.holdout=0")  # the config's holdout is of its clean folder
        title = f"{folder} as configs/ddn_sirr.yaml's labeled pairs"
        pipelines.append((f"pairs{number}", "configs/ddn_sirr.yaml", pairs, title))
    found = [
        Measurement(
            f"pipeline/{name}",
            "pipeline",
            {"config": config, "overrides": overrides, "seconds": seconds},
            f"tf.data pipeline, {title}",
        )
        for name, config, overrides, title in pipelines
    ]
    if len(pipelines) > 1:  # one timed step each, minutes on a CPU
        paper = "configs/paper.yaml"
        steps = [
            _training("paper", "pretrain", paper, [], 0.0, 1, "training, paper setting, pretrain"),
            _training(
                "paper",
                "semi",
                paper,
                ["train.recompute=true"],
                0.0,
                1,
                "training, paper setting, semi (train.recompute)",
            ),
        ]
        for step in steps:
            step.timeout_s = PAPER_TIMEOUT_S
        found += steps
    return found


def inference_rows(keras: dict, saved: dict) -> list[list[str]]:
    """Rows of the inference table: one per image size measured."""
    flops = {row["size"]: counted_gflop(row["flops"]) for row in keras.get("forward_flops", [])}
    latency = {
        name: {row["size"]: row for row in result.get("latency", [])}
        for name, result in (("keras", keras), ("savedmodel", saved))
    }
    rows = []
    for size in INFERENCE_SIZES:
        gflop = flops.get(size)
        cells = [f"{size} × {size}", fmt(gflop, 1)]
        seconds = [latency[name].get(size, {}).get("median_s") for name in latency]
        if gflop is None and not any(seconds):
            continue
        cells += [fmt(s) for s in seconds]
        # A tiled SavedModel call does more arithmetic than the whole-image count.
        counted = [not latency[name].get(size, {}).get("tiled") for name in latency]
        cells += [
            fmt(gflop / s, 0) if s and gflop and whole else "–"
            for s, whole in zip(seconds, counted, strict=True)
        ]
        peaks = [latency[name].get(size, {}).get("peak_rss_mb") for name in latency]
        cells.append(" / ".join(fmt(p, 0) for p in peaks))
        rows.append(cells)
    return rows


INFERENCE_HEADER = [
    "image (px)",
    "GFLOP",
    "Keras graph (s)",
    "SavedModel (s)",
    "Keras GFLOP/s",
    "SavedModel GFLOP/s",
    "peak RSS MB (Keras / SavedModel)",
]

SETTING_NAMES = {
    "demo": "demo (configs/demo.yaml)",
    "paper": "paper (configs/paper.yaml)",
}

TRAINING_HEADER = [
    "setting",
    "stage",
    "batch × crop",
    "s / step",
    "steps / s",
    "crops / s",
    "GFLOP / step",
    "GFLOP/s",
    "peak RSS MB",
]


def crops_per_step(result: dict) -> int:
    """Labeled crops, plus as many unlabeled ones for ``semi``."""
    return result["batch_size"] * (2 if result["stage"] == "semi" else 1)


def training_rows(measurements: list[Measurement]) -> list[list[str]]:
    """Rows of the training table: one per (setting, stage)."""
    rows = []
    for m in measurements:
        if m.kind != "training":
            continue
        _, setting, stage = m.key.split("/")
        # e.g. "semi, train.recompute=true": what the step ran with besides its config
        stage = ", ".join([stage, *m.params.get("overrides", [])])
        r = m.result
        if "seconds_per_step" not in r:
            rows.append([SETTING_NAMES[setting], stage, "", failure_cell(r), "", "", "", "", ""])
            continue
        seconds = r["seconds_per_step"]
        gflop = counted_gflop(r["step_flops"])
        rows.append(
            [
                SETTING_NAMES[setting],
                stage,
                f"{r['batch_size']} × {r['crop_size']}²",
                fmt(seconds),
                fmt(1 / seconds),
                fmt(crops_per_step(r) / seconds),
                fmt(gflop),
                fmt(gflop / seconds, 0),
                fmt(r["peak_rss_mb"], 0),
            ]
        )
    return rows


PIPELINE_HEADER = [
    "config",
    "batch × crop",
    "pretrain stream (crops/s)",
    "semi streams (crops/s)",
    "× pretrain need",
    "× semi need",
    "build (s)",
    "peak RSS MB",
]


def pipeline_feeds(name: str) -> str:
    """The training setting a pipeline feeds (same batch and crop): the demo's, else the paper's."""
    return "demo" if name == "demo" else "paper"


def pipeline_rows(measurements: list[Measurement]) -> list[list[str]]:
    """Rows of the pipeline table, with the pipeline's speed over what training consumes."""
    by_key = {m.key: m.result for m in measurements}
    rows = []
    for m in measurements:
        if m.kind != "pipeline":
            continue
        name = m.key.split("/")[1]
        r = m.result
        if "labeled_crops_per_s" not in r:
            reason = f"skipped: {r['skipped']}" if "skipped" in r else failure_cell(r)
            rows.append([Path(m.params["config"]).name, "", reason, "", "", "", "", ""])
            continue
        ratios = []
        for stage, delivered in (
            ("pretrain", r["labeled_crops_per_s"]),
            ("semi", r["semi_crops_per_s"]),
        ):
            trained = by_key.get(f"training/{pipeline_feeds(name)}/{stage}", {})
            if "seconds_per_step" in trained:
                needed = crops_per_step(trained) / trained["seconds_per_step"]
                ratios.append(fmt(delivered / needed, 0) + "×")
            else:
                ratios.append("–")
        source = Path(r["config"]).name
        if "pairs" in r:
            source += f" with pairs {r['pairs']}"
        rows.append(
            [
                source,
                f"{r['batch_size']} × {r['crop_size']}²",
                fmt(r["labeled_crops_per_s"], 0),
                fmt(r["semi_crops_per_s"], 0),
                *ratios,
                fmt(r["build_s"], 1),
                fmt(r["peak_rss_mb"], 0),
            ]
        )
    return rows


def cores_used(measurements: list[Measurement]) -> list[float]:
    """Cores each timed section kept busy (see :class:`bench.worker_tools.CoresUsed`)."""
    found = []
    for m in measurements:
        rows = [*m.result.get("latency", []), m.result]
        found += [row["cores_used"] for row in rows if "cores_used" in row]
    return found


def scoring_note(result: dict) -> str:
    """Images per second of evaluate(): the network alone, and all that is not the network."""
    n = result["images"]
    return (
        f"Scoring ({n} test pairs of {result['width']}×{result['height']}, evaluate() with "
        f"the released-size network): network {n / result['network_s']:.2f} images/s; "
        f"everything else (PSNR/SSIM in both conventions, the rainy baseline, reading) "
        f"{result['other_s'] / n:.3f} s per image ({n / result['other_s']:.1f} images/s)."
    )


def notes(measurements: list[Measurement], info: dict, args) -> list[str]:
    """The conventions behind the tables, and the scoring cost."""
    by_key = {m.key: m.result for m in measurements}
    lines = []
    scored = by_key.get("scoring", {})
    if "other_s" in scored:
        lines.append(scoring_note(scored))
    reference = by_key.get("training/demo/pretrain", {})
    if "step_flops" in reference:
        forward = counted_gflop(reference["forward_flops_per_crop"]) * reference["batch_size"]
        ratio = counted_gflop(reference["step_flops"]) / forward
        lines.append(
            "FLOPs are counted by TensorFlow's profiler on the timed graphs (a multiply-add "
            "is 2 FLOPs; resize, LeakyReLU, sigmoid, tanh count 0, <2 % of the work). "
            "Training FLOPs are those of the whole train_step graph (forward, backward, "
            f"optimizer): for pretrain {ratio:.2f}× the forward FLOPs of the batch, the usual "
            "≈3× convention; a semi step runs the online network forward and backward on "
            "5 × batch images (labeled + 4 × batch Eq. 9 mixtures) and the target forward "
            "on the unlabeled batch."
        )
    cores, available = cores_used(measurements), info["cores"] or 1
    if cores:
        line = (
            f"The timed sections kept {min(cores):.1f} to {max(cores):.1f} of the {available} "
            "cores busy (process CPU time / wall time)"
        )
        if min(cores) < 0.75 * available:
            line += (
                "; where far below that, other programs were taking CPU time (or the work was "
                "too small to split) and the figure is slower than this machine can do"
            )
        lines.append(line + ".")
    lines.append(
        "Latency: median of "
        f"{'2' if args.quick else '3'} calls on one image after a warm-up call; training: "
        "one fixed synthetic batch, first (tracing) step not timed; peak RSS: the whole "
        "process (TensorFlow, network, data), one process per measurement. Weights are "
        "random; speed does not depend on them."
    )
    return lines


def report(measurements: list[Measurement], info: dict, args, side_by_side: str = "") -> str:
    """The tables and notes as markdown; ``side_by_side`` is that section's markdown."""
    by_key = {m.key: m.result for m in measurements}
    options = "".join(
        f" {flag}" for flag, used in (("--quick", args.quick), ("--paper", args.paper)) if used
    )
    options += f" --threads {args.threads}" if args.threads else ""
    if set(args.only) != set(SECTIONS):
        options += "".join(f" --only {section}" for section in SECTIONS if section in args.only)
    inference = inference_rows(
        by_key.get("inference/keras", {}), by_key.get("inference/savedmodel", {})
    )
    sections = [
        (
            "**Inference**, one image through the released-size network (median seconds):",
            INFERENCE_HEADER,
            inference,
            "",
        ),
        (
            "**Training**, `tf.function(trainer.train_step)` on a fixed batch "
            "(crops / s counts labeled and unlabeled crops):",
            TRAINING_HEADER,
            training_rows(measurements),
            "lllrrrrrr",
        ),
        (
            "**Input pipeline** (tf.data), crops per second, and how many times faster than "
            "training at the same setting consumes them:",
            PIPELINE_HEADER,
            pipeline_rows(measurements),
            "llrrrrrr",
        ),
    ]
    parts = [
        f"Machine: {describe_machine(info, args.threads)}. Command: `python -m bench{options}`.",
        "",
        side_by_side,
    ]
    for title, header, rows, align in sections:
        if rows:  # a section left out with --only prints nothing
            parts += [title, "", markdown_table(header, rows, align), ""]
    parts += [
        memory_modes.report_section(measurements),
        convolutions.report_section(measurements),
        *(f"- {line}" for line in notes(measurements, info, args)),
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- main


def describe(measurement: Measurement) -> str:
    """A progress line's figures for a measurement of any section that ran."""
    r = measurement.result
    if measurement.kind in memory_modes.WORKERS:
        return memory_modes.progress(r)
    if measurement.kind in convolutions.WORKERS:
        return convolutions.progress(r)
    if measurement.kind == "inference":
        return ", ".join(
            f"{row['size']}: {row['median_s']:.3f} s ({row['cores_used']:.1f} cores)"
            for row in r["latency"]
        )
    if measurement.kind == "scoring":
        return scoring_note(r)
    if measurement.kind == "training":
        return (
            f"{r['seconds_per_step']:.3f} s / step ({r['steps']} steps; "
            f"first step {r['first_step_s']:.1f} s; {r['cores_used']:.1f} cores), "
            f"peak {r['peak_rss_mb']:.0f} MB"
        )
    return (
        f"{r['labeled_crops_per_s']:.0f} crops/s labeled, {r['semi_crops_per_s']:.0f} crops/s "
        f"both streams ({r['cores_used']:.1f} cores)"
    )


def run_side_by_side(args) -> tuple[str, list]:
    """The side-by-side rounds and their markdown; nothing, saying why, without PyTorch."""
    from bench import side_by_side

    if importlib.util.find_spec("torch") is None:
        note = (
            "PyTorch is not installed (`pip install -e .[bench]`): no side-by-side comparison "
            "with the released network."
        )
        print(note)
        return note + "\n", []
    print(f"side by side with the PyTorch reference, {args.rounds} round(s):")
    rounds = side_by_side.run_rounds(args, progress=lambda line: print(line, flush=True))
    return side_by_side.report(rounds, side_by_side.thread_count(args)), rounds


def main(argv=None) -> int:

    args = parse_args(argv)
    info = machine_info()
    print(f"moss-tf benchmark on {describe_machine(info, args.threads)}")
    if info["load_average_1min"] is not None:  # each measurement reports the cores it got
        print(f"load average at start: {info['load_average_1min']:.2f}")
    started = time.perf_counter()
    section, rounds = run_side_by_side(args) if "side-by-side" in args.only else ("", [])
    measurements = plan(args, args.inference_sizes if rounds else ())
    run_measurements(measurements, describe)
    total = time.perf_counter() - started
    text = report(measurements, info, args, section)
    print(f"\nAll measurements took {total:.0f} s.\n")
    print(text, end="")
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
        print(f"\nmarkdown written to {args.markdown}")
    if args.json:
        figures = {
            "machine": info,
            "threads": args.threads,
            "quick": args.quick,
            "total_s": total,
            "side_by_side_rounds": [r.results for r in rounds],
            "measurements": {m.key: {"params": m.params, **m.result} for m in measurements},
        }
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
        print(f"figures written to {args.json}")
    failed = any("error" in result for r in rounds for result in r.results.values())
    return 1 if failed or any("error" in m.result for m in measurements) else 0


if __name__ == "__main__":
    sys.exit(main())
