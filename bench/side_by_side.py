"""moss-tf next to the released network in PyTorch, in the same run, in alternating rounds.

Each round runs, each in a fresh process: the float32 matmul peak in
TensorFlow, then for every row moss-tf and right after it the PyTorch
reference (:mod:`bench.reference_torch`), all with the same thread count.
A row's ratio is computed within each round (reference seconds / moss-tf
seconds) and reported as the median with its range over the rounds, so a
machine that speeds up or slows down between rounds moves both sides.

Rows: one image at 512² and 1024² (moss-tf as a Keras graph and as the
exported SavedModel's ``serving_default``), and a ``pretrain`` and a
``semi`` step of the released network at batch 8 × 64², moss-tf through the
trainer ``train.py`` builds (``build_trainer``, ``tf.function(train_step)``),
on one fixed batch, without weight averaging (the reference has none). With
``--paper`` also the paper setting, 32 × 256² ``pretrain`` and ``semi`` at
``--paper-semi-batch`` (a step takes tens of seconds on each side, so the run
takes much longer).

GFLOP are TensorFlow's profiler counts of moss-tf's graphs (:mod:`bench.flops`);
the reference does the same arithmetic, so its GFLOP/s use the same count.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

from bench.common import (
    PAPER_TIMEOUT_S,
    Measurement,
    counted_gflop,
    fmt,
    markdown_table,
    run_worker,
)

INFERENCE_SIDES = (512, 1024)


@dataclass
class Round:
    """One side-by-side round's worker results, by measurement key."""

    results: dict[str, dict] = field(default_factory=dict)


def thread_count(args) -> int:
    """``--threads``, or every core: the same for TensorFlow and PyTorch."""
    return args.threads or os.cpu_count() or 1


def measurements(args) -> list[Measurement]:
    """The workers of one round, in the order they run (each moss-tf before its reference)."""
    threads = thread_count(args)
    sides = list(getattr(args, "inference_sizes", None) or INFERENCE_SIDES)
    runs = 2 if args.quick else 3
    seconds = 1.0 if args.quick else 2.0
    found = [
        Measurement("peak", "matmul_peak", {"threads": threads}, "float32 matmul peak"),
        Measurement(
            "ours/inference/keras",
            "inference",
            {"variant": "keras", "sizes": sides, "flop_sizes": sides, "runs": runs},
            "moss-tf inference, Keras graph",
        ),
        Measurement(
            "ours/inference/savedmodel",
            "inference",
            {"variant": "savedmodel", "sizes": sides, "flop_sizes": [], "runs": runs},
            "moss-tf inference, SavedModel",
        ),
        Measurement(
            "reference/inference",
            "reference_inference",
            {"sizes": sides, "runs": runs},
            "PyTorch reference inference",
        ),
    ]
    for name, stage, stage_batch, crop, overrides in training_settings(
        args.paper, args.paper_semi_batch
    ):
        timing = {"seconds": 0.0, "min_steps": 1}
        if name == "8x64":
            timing = {"seconds": seconds, "min_steps": 1 if args.quick else 3}
        found += [
            Measurement(
                f"ours/training/{name}/{stage}",
                "training",
                {"config": "configs/paper.yaml", "stage": stage, "overrides": overrides} | timing,
                f"moss-tf {stage} step, {stage_batch} × {crop}²",
            ),
            Measurement(
                f"reference/training/{name}/{stage}",
                "reference_training",
                {"stage": stage, "batch_size": stage_batch, "crop_size": crop} | timing,
                f"PyTorch reference {stage} step, {stage_batch} × {crop}²",
            ),
        ]
    for m in found:
        m.params["threads"] = threads
        if "/paper/" in m.key:
            m.timeout_s = PAPER_TIMEOUT_S
    return found


def training_settings(paper: bool, paper_semi_batch: int) -> list[tuple]:
    """``(setting, stage, batch, crop, overrides)`` of each training row, ``overrides`` for
    ``configs/paper.yaml``: both stages at 8 × 64², and with ``paper`` at 32 × 256²
    (``semi`` at ``paper_semi_batch``)."""
    sizes = [("8x64", 8, 64)] + ([("paper", 32, 256)] if paper else [])
    found = []
    for name, batch, crop in sizes:
        for stage in ("pretrain", "semi"):
            stage_batch = paper_semi_batch if (name, stage) == ("paper", "semi") else batch
            # The reference trains as the authors do, without weight averaging
            # (paper.yaml's default): both sides do the same arithmetic.
            overrides = [
                f"train.batch_size={stage_batch}",
                f"train.crop_size={crop}",
                "train.weight_average=0",
            ]
            found.append((name, stage, stage_batch, crop, overrides))
    return found


def run_rounds(args, progress=print) -> list[Round]:
    """Run ``args.rounds`` rounds of :func:`measurements`; ``progress`` gets one line each."""
    rounds = []
    plan = measurements(args)
    for number in range(1, args.rounds + 1):
        this_round = Round()
        for i, m in enumerate(plan, 1):
            result = run_worker(m)
            this_round.results[m.key] = result
            progress(
                f"  round {number}/{args.rounds} [{i}/{len(plan)}] {m.title}: {_brief(result)}"
            )
        rounds.append(this_round)
    return rounds


def _brief(result: dict) -> str:
    if "error" in result:
        return "FAILED " + result["error"].splitlines()[0]
    if "median_gflops" in result:
        return f"{result['median_gflops']:.0f} GFLOP/s"
    if "latency" in result:
        return ", ".join(f"{r['size']}²: {r['median_s']:.3f} s" for r in result["latency"])
    return f"{result['seconds_per_step']:.3f} s / step ({result['cores_used']:.1f} cores)"


# ---------------------------------------------------------------- the table


def _seconds(result: dict, side: int | None) -> float | None:
    """A worker's timed seconds: the latency at ``side``, or seconds per training step."""
    if side is None:
        return result.get("seconds_per_step")
    for row in result.get("latency", []):
        if row["size"] == side:
            return row["median_s"]
    return None


def _tiled(result: dict, side: int | None) -> bool:
    """Whether a worker ran the image at ``side`` in tiles (a SavedModel above its tile size)."""
    return any(row["size"] == side and row.get("tiled") for row in result.get("latency", []))


def _gflop_of(result: dict, side: int | None) -> float | None:
    if side is None:
        return counted_gflop(result["step_flops"]) if "step_flops" in result else None
    for row in result.get("forward_flops", []):
        if row["size"] == side:
            return counted_gflop(row["flops"])
    return None


def row_specs(rounds: list[Round]) -> list[tuple[str, str, str, str, int | None]]:
    """(title, moss-tf key, reference key, key holding the FLOP count, image side) per row."""
    keys = rounds[0].results if rounds else {}
    specs = []
    sides = sorted(
        {
            row["size"]
            for r in rounds
            for row in r.results.get("reference/inference", {}).get("latency", [])
        }
        | {
            row["size"]
            for r in rounds
            for row in r.results.get("ours/inference/keras", {}).get("latency", [])
        }
    )
    for side in sides or INFERENCE_SIDES:
        for variant, name in (("keras", "Keras graph"), ("savedmodel", "SavedModel")):
            specs.append(
                (
                    f"one {side}² image, {name}",
                    f"ours/inference/{variant}",
                    "reference/inference",
                    "ours/inference/keras",
                    side,
                )
            )
    for key in keys:
        if key.startswith("ours/training/"):
            _, _, setting, stage = key.split("/")
            title = f"{stage} step, {'batch 8 × 64²' if setting == '8x64' else 'paper setting'}"
            specs.append((title, key, key.replace("ours/", "reference/"), key, None))
    return specs


def _spread(values: list[float], digits: int | None = None) -> str:
    """Median and, with several values, their range: ``0.450 (0.43–0.47)``."""
    text = fmt(statistics.median(values), digits)
    if len(values) > 1:
        text += f" ({fmt(min(values), digits)}–{fmt(max(values), digits)})"
    return text


def peak_gflops(rounds: list[Round]) -> list[float]:
    """The matmul peak of each round that measured it (median call, GFLOP/s)."""
    return [
        r.results["peak"]["median_gflops"]
        for r in rounds
        if "median_gflops" in r.results.get("peak", {})
    ]


SIDE_BY_SIDE_HEADER = [
    "measure",
    "GFLOP",
    "moss-tf (s)",
    "PyTorch (s)",
    "PyTorch / moss-tf",
    "moss-tf GFLOP/s",
    "of peak",
    "PyTorch GFLOP/s",
    "of peak",
]


def side_by_side_rows(rounds: list[Round]) -> list[list[str]]:
    """One row per measure: medians over rounds (range), the per-round ratio, share of peak."""
    peaks = peak_gflops(rounds)
    peak = statistics.median(peaks) if peaks else None
    rows = []
    for title, ours_key, reference_key, flop_key, side in row_specs(rounds):
        ours, reference, ratios, gflop = [], [], [], None
        # A tiled run does more arithmetic than the whole-image count: no rate for it.
        tiled = any(_tiled(r.results.get(ours_key, {}), side) for r in rounds)
        for r in rounds:
            mine = _seconds(r.results.get(ours_key, {}), side)
            theirs = _seconds(r.results.get(reference_key, {}), side)
            gflop = gflop or _gflop_of(r.results.get(flop_key, {}), side)
            ours += [mine] if mine else []
            reference += [theirs] if theirs else []
            ratios += [theirs / mine] if mine and theirs else []
        cells = [f"{title}, tiled" if tiled else title, fmt(gflop, 1)]
        cells += [
            _spread(ours) if ours else "failed",
            _spread(reference) if reference else "failed",
        ]
        cells.append(_spread(ratios, 2) + "×" if ratios else "–")
        for seconds, counted in ((ours, not tiled), (reference, True)):
            rate = gflop / statistics.median(seconds) if gflop and seconds and counted else None
            cells += [fmt(rate, 0), f"{rate / peak:.0%}" if rate and peak else "–"]
        rows.append(cells)
    return rows


def report(rounds: list[Round], threads: int) -> str:
    """The side-by-side section as markdown: the table, the peak, the cores each side got."""
    peaks = peak_gflops(rounds)
    rows = side_by_side_rows(rounds)
    cores = [
        row.get("cores_used")
        for r in rounds
        for result in r.results.values()
        for row in [result, *result.get("latency", [])]
        if row.get("cores_used")
    ]
    lines = [
        f"**Side by side** with the released network in PyTorch, {len(rounds)} alternating "
        f"round(s) of fresh processes, {threads} threads each side; seconds are medians over "
        "rounds (range), the ratio is taken within each round:",
        "",
        markdown_table(SIDE_BY_SIDE_HEADER, rows, "lrrrrrrrr"),
        "",
    ]
    if peaks:
        lines.append(
            f"- Peak: a float32 2048² matmul in TensorFlow, same threads, "
            f'{_spread(peaks, 0)} GFLOP/s over the rounds; "of peak" divides by its median.'
        )
    if any(row[0].endswith(", tiled") for row in rows):
        lines.append(
            "- Tiled: the SavedModel serves an image larger than its tile as the command line "
            "does (overlapping tiles, two passes), more arithmetic than the whole-image GFLOP, "
            "so its GFLOP/s is left out; the ratio compares the time for the same image."
        )
    if cores:
        lines.append(
            f"- The timed sections kept {min(cores):.1f} to {max(cores):.1f} cores busy "
            "(process CPU time / wall time); far below the core count means other programs "
            "were taking CPU time."
        )
    return "\n".join(lines) + "\n"
