"""Cost of the memory's inference modes and of two-pass tiling (issue 13).

    python -m bench.memory_modes            # these rows alone, about 5 minutes on 2 idle cores
    python -m bench.memory_modes --quick    # 512 px batch, shorter: about 2 minutes

``python -m bench`` runs the same measurements and prints the same tables.
Each measurement runs in a process of its own (``python -m bench._worker``),
so its peak memory is its own; all of them run in one invocation, so their
ratios are side by side:

1. a batch of ``[4, S, S, 3]`` images through the released-size network
   (a ``tf.function``) with ``inference_memory`` ``per_image`` (each image
   its own Eq. 3 update), ``batch`` (the released per-batch update) and
   ``frozen`` (no update);
2. a 2048 x 1536 photo through :class:`moss_tf.infer.derain.Derainer`: whole,
   in 512 px tiles with the photo's memory update (two passes), and in 512 px
   tiles with a frozen memory (one pass).

Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import sys
import time

from bench.common import (
    Measurement,
    failure_cell,
    fmt,
    markdown_table,
    run_section,
    section_parser,
)

MODES = ("per_image", "batch", "frozen")
PHOTO = (1536, 2048)  # height, width
TILE, OVERLAP = 512, 64
TILINGS = {
    "whole": ("whole photo, one pass", "per_image", max(PHOTO)),
    "two_pass": (f"{TILE} px tiles, photo's memory update (two passes)", "per_image", TILE),
    "frozen": (f"{TILE} px tiles, frozen memory (one pass)", "frozen", TILE),
}


# ---------------------------------------------------------------- workers (child processes)


def memory_mode(mode: str, size: int, batch: int, runs: int = 3, threads: int | None = None):
    """Median seconds of one ``[batch, size, size, 3]`` batch with ``inference_memory=mode``."""
    from bench.bench_inference import timed
    from bench.worker_tools import CoresUsed, max_rss_mb, setup_tensorflow

    tf = setup_tensorflow(threads)
    from moss_tf.nn.network import MOSSNet

    net = MOSSNet(inference_memory=mode)
    net.build()
    forward = tf.function(lambda x: net(x, training=False))
    images = tf.random.stateless_uniform([batch, size, size, 3], (size, 1), -1.0, 1.0)
    baseline = max_rss_mb()
    with CoresUsed() as usage:
        median, fastest = timed(forward, images, 1, runs)
    return {
        "mode": mode,
        "size": size,
        "batch": batch,
        "median_s": median,
        "fastest_s": fastest,
        "cores_used": usage.cores,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": max_rss_mb(),
    }


def tiling(variant: str, runs: int = 2, threads: int | None = None):
    """Median seconds of :meth:`Derainer.derain` on a 2048 x 1536 photo, per ``TILINGS`` variant."""
    from bench.worker_tools import CoresUsed, max_rss_mb, setup_tensorflow

    tf = setup_tensorflow(threads)
    from moss_tf.infer.derain import Derainer
    from moss_tf.nn.network import MOSSNet

    _, mode, tile_size = TILINGS[variant]
    net = MOSSNet(inference_memory=mode)
    net.build()
    derainer = Derainer(net, tile_size=tile_size, overlap=OVERLAP)
    photo = tf.random.stateless_uniform([*PHOTO, 3], (7, 0), -1.0, 1.0).numpy()
    derainer.derain_model_range(photo)  # tracing and kernel selection, not timed
    baseline = max_rss_mb()
    seconds = []
    with CoresUsed() as usage:
        for _ in range(runs):
            start = time.perf_counter()
            derainer.derain_model_range(photo)
            seconds.append(time.perf_counter() - start)
    return {
        "variant": variant,
        "median_s": sorted(seconds)[len(seconds) // 2],
        "runs": runs,
        "cores_used": usage.cores,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": max_rss_mb(),
    }


WORKERS = {"memory_mode": memory_mode, "tiling": tiling}


# ---------------------------------------------------------------- plan and tables (parent)


def plan(quick: bool, threads: int | None = None) -> list:
    """The measurements, as :class:`bench.common.Measurement` objects."""
    size, runs = (512, 2) if quick else (1024, 3)
    found = [
        Measurement(
            f"memory_mode/{mode}",
            "memory_mode",
            {"mode": mode, "size": size, "batch": 4, "runs": runs},
            f"memory at inference, {mode}, 4 x {size} px",
        )
        for mode in MODES
    ]
    found += [
        Measurement(
            f"tiling/{variant}",
            "tiling",
            {"variant": variant, "runs": 1 if quick else 2},
            f"2048 x 1536 photo, {variant.replace('_', ' ')}",
        )
        for variant in TILINGS
    ]
    for measurement in found:
        if threads:
            measurement.params["threads"] = threads
    return found


def progress(result: dict) -> str:
    """The progress line's end for one of these measurements."""
    if "median_s" not in result:
        return f"FAILED ({result.get('error')})"
    return (
        f"{result['median_s']:.3f} s ({result['cores_used']:.1f} cores), "
        f"peak {result['peak_rss_mb']:.0f} MB"
    )


def _cells(result: dict, reference: dict) -> list[str]:
    if "median_s" not in result:
        return [failure_cell(result), "", ""]
    ratio = result["median_s"] / reference["median_s"] if "median_s" in reference else None
    return [
        fmt(result["median_s"]),
        f"{ratio:.2f}×" if ratio else "–",
        fmt(result["peak_rss_mb"], 0),
    ]


def report_section(measurements: list) -> str:
    """The two tables as markdown ('' when none of these measurements ran)."""
    by_key = {m.key: m for m in measurements}
    if not any(key.startswith(("memory_mode/", "tiling/")) for key in by_key):
        return ""
    lines = []
    modes = [by_key[f"memory_mode/{mode}"] for mode in MODES if f"memory_mode/{mode}" in by_key]
    if modes:
        params = modes[0].params
        reference = by_key["memory_mode/per_image"].result
        rows = [[m.params["mode"], *_cells(m.result, reference)] for m in modes]
        lines += [
            f"**Memory at inference**, a batch of {params['batch']} images of "
            f"{params['size']} × {params['size']} through the released-size network "
            "(`model.inference_memory`; median seconds per batch):",
            "",
            markdown_table(["mode", "s / batch", "× per_image", "peak RSS MB"], rows),
            "",
        ]
    tilings = [by_key[f"tiling/{v}"] for v in TILINGS if f"tiling/{v}" in by_key]
    if tilings:
        reference = by_key["tiling/whole"].result
        rows = [[TILINGS[m.params["variant"]][0], *_cells(m.result, reference)] for m in tilings]
        lines += [
            f"**Tiled photo**, {PHOTO[1]} × {PHOTO[0]} through `Derainer` "
            f"(released-size network, overlap {OVERLAP}; median seconds):",
            "",
            markdown_table(["variant", "s", "× whole", "peak RSS MB"], rows),
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = section_parser("python -m bench.memory_modes", __doc__)
    parser.add_argument("--quick", action="store_true", help="512 px batch, fewer runs")
    args = parser.parse_args(argv)
    measurements = plan(args.quick, args.threads)
    command = f"python -m bench.memory_modes{' --quick' if args.quick else ''}"
    return run_section(
        "memory modes, tiling",
        measurements,
        report_section,
        lambda m: progress(m.result),
        args,
        command,
    )


if __name__ == "__main__":
    sys.exit(main())
