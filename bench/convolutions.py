"""What the convolutions alone take: the ceiling on a step's share of the matmul peak.

    python -m bench.convolutions            # inference 512², both steps at 8 × 64²: ~1.5 min
    python -m bench.convolutions --paper    # plus the paper setting (32 × 256²): ~3.5 min more

``python -m bench`` runs the same measurements (section ``convolutions``).
In one process per row, the worker traces the graph that is timed (one
image through the network, or ``trainer.train_step`` as ``train.py`` builds
it), lists its convolutions (forward ``Conv2D`` and, in training,
``Conv2DBackpropInput`` / ``Conv2DBackpropFilter``, the same shapes and
attributes), times each distinct one alone on random tensors, and adds the
times up by how often each occurs. The whole graph and a float32 matmul
(the peak) are timed in the same process, alternating with the
convolutions over ``rounds``, so every ratio in a row is side by side.

The list comes from the traced graph, as the FLOP count does: it holds
the input gradient of the first convolution (the images'), which TensorFlow
prunes when it runs the step (28 MFLOP of the 29.3 GFLOP at 8 × 64², 0.4%
of the convolutions' time alone).

"Ceiling" divides the whole graph's FLOPs (as the side-by-side table counts
them, :mod:`bench.flops`) by the convolutions' time alone: the share of the
peak the step would reach if everything that is not a convolution
(activations, sums, batch norms, the memory, Adam) took no time at all. A
target above the ceiling needs faster convolution kernels, not a better graph.

Weights and inputs are random: speed does not depend on them.
"""

from __future__ import annotations

import functools
import statistics
import sys
from collections import Counter
from dataclasses import dataclass

from bench.common import (
    PAPER_TIMEOUT_S,
    Measurement,
    failure_cell,
    fmt,
    markdown_table,
    run_section,
    section_parser,
)
from bench.side_by_side import training_settings

#: The op types listed: forward convolution, its input gradient, its filter gradient.
CONV_TYPES = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")
_ATTRS = ("strides", "padding", "explicit_paddings", "dilations", "data_format")


@dataclass(frozen=True)
class Convolution:
    """One convolution op of a graph, all that its time depends on.

    ``shapes`` are those of its tensor inputs in the op's order (for the
    backprop ops the ``*_sizes`` input is the shape it names); ``flops`` is
    ``2 × output-side elements × kernel height × width × input channels``,
    as :mod:`bench.flops` counts a ``Conv2D``.
    """

    op_type: str
    shapes: tuple[tuple[int, ...], ...]
    dtype: str
    attrs: tuple
    flops: int


def graph_convolutions(graph) -> Counter:
    """``Counter`` of the :class:`Convolution` ops of a traced ``tf.Graph`` (fixed shapes)."""
    found = Counter()
    for op in graph.get_operations():
        if op.type not in CONV_TYPES:
            continue
        if op.type == "Conv2D":
            shapes = [op.inputs[0].shape, op.inputs[1].shape]
            kernel, output_side = shapes[1], op.outputs[0].shape
        elif op.type == "Conv2DBackpropInput":  # (input_sizes, filter, out_backprop)
            shapes = [op.outputs[0].shape, op.inputs[1].shape, op.inputs[2].shape]
            kernel, output_side = shapes[1], shapes[2]
        else:  # Conv2DBackpropFilter: (input, filter_sizes, out_backprop)
            shapes = [op.inputs[0].shape, op.outputs[0].shape, op.inputs[2].shape]
            kernel, output_side = shapes[1], shapes[2]
        shapes = tuple(tuple(s.as_list()) for s in shapes)
        kh, kw, cin, _ = kernel.as_list()
        flops = 2 * output_side.num_elements() * kh * kw * cin
        attrs = tuple((name, _attr(op, name)) for name in _ATTRS)
        dtype = op.outputs[0].dtype.name
        found[Convolution(op.type, shapes, dtype, attrs, flops)] += 1
    return found


def _attr(op, name):
    value = op.get_attr(name)
    if isinstance(value, bytes):
        return value.decode()
    return tuple(value) if isinstance(value, list) else value


def convolution_call(tf, conv: Convolution):
    """``(function, make_inputs)``: ``function(*make_inputs())`` runs ``conv`` once.

    The inputs are random tensors of the op's shapes and dtype, made on
    demand: at the paper setting all of a step's at once would take GBs.
    """
    attrs = dict(conv.attrs)
    dtype = tf.as_dtype(conv.dtype)
    raw = getattr(tf.raw_ops, conv.op_type)

    def random(index):
        return tf.cast(tf.random.stateless_normal(conv.shapes[index], (index, 0)), dtype)

    if conv.op_type == "Conv2D":
        run = tf.function(lambda x, w: raw(input=x, filter=w, **attrs))
        return run, lambda: (random(0), random(1))
    if conv.op_type == "Conv2DBackpropInput":
        sizes = tf.constant(conv.shapes[0], tf.int32)
        run = tf.function(lambda w, dy: raw(input_sizes=sizes, filter=w, out_backprop=dy, **attrs))
        return run, lambda: (random(1), random(2))
    sizes = tf.constant(conv.shapes[1], tf.int32)
    run = tf.function(lambda x, dy: raw(input=x, filter_sizes=sizes, out_backprop=dy, **attrs))
    return run, lambda: (random(0), random(2))


# ---------------------------------------------------------------- worker (child process)


def convolutions(
    stage: str,
    config: str = "configs/paper.yaml",
    overrides: list[str] | None = None,
    side: int = 512,
    rounds: int = 2,
    min_calls: int = 3,
    min_seconds: float = 0.05,
    threads: int | None = None,
) -> dict:
    """Whole graph vs its convolutions alone vs the matmul peak, ``rounds`` alternations.

    ``stage`` is ``"inference"`` (one ``[1, side, side, 3]`` image through the
    released network) or a training stage (``trainer.train_step`` built from
    ``config`` plus ``overrides`` on a fixed synthetic batch).
    """
    from bench.flops import function_flops
    from bench.side_by_side_workers import matmul_gflops
    from bench.worker_tools import call_timings, max_rss_mb, setup_tensorflow

    tf = setup_tensorflow(threads)
    whole, inputs, setting = _whole_graph(tf, stage, config, overrides or [], side)
    traced = whole.get_concrete_function(*inputs)
    graph_flops = sum(function_flops(traced).values())
    found = graph_convolutions(traced.graph)
    calls = {conv: convolution_call(tf, conv) for conv in found}
    whole(*inputs)  # tracing and oneDNN's kernel choice, not timed
    whole_s, alone_s, peaks = [], {conv: [] for conv in found}, []
    for _ in range(rounds):
        peaks.append(matmul_gflops(tf))
        # Medians: small convolutions take well under a millisecond, and
        # the first calls after a pause are the slow ones.
        timings = call_timings(functools.partial(whole, *inputs), min_calls, min_seconds)
        whole_s.append(statistics.median(timings))
        for conv, (fn, make_inputs) in calls.items():
            args = make_inputs()
            fn(*args)  # warm-up, not timed
            timings = call_timings(functools.partial(fn, *args), min_calls, min_seconds)
            alone_s[conv].append(statistics.median(timings))
    by_type = {}
    for conv, count in found.items():
        entry = by_type.setdefault(conv.op_type, {"ops": 0, "flops": 0, "seconds": 0.0})
        entry["ops"] += count
        entry["flops"] += count * conv.flops
        entry["seconds"] += count * statistics.median(alone_s[conv])
    return {
        "stage": stage,
        "setting": setting,
        "graph_flops": graph_flops,
        "whole_s": statistics.median(whole_s),
        "convolutions": by_type,
        "distinct_convolutions": len(found),
        "peak_gflops": statistics.median(peaks),
        "rounds": rounds,
        "peak_rss_mb": max_rss_mb(),
    }


def _whole_graph(tf, stage, config, overrides, side):
    """``(tf.function, inputs, setting)`` of the graph a row times."""
    if stage == "inference":
        from moss_tf.nn.network import MOSSNet

        net = MOSSNet()
        net.build()
        image = tf.random.stateless_uniform([1, side, side, 3], (side, 0), -1.0, 1.0)
        return tf.function(lambda x: net(x, training=False)), (image,), f"one {side}² image"
    from bench.worker_tools import compiled_train_step

    cfg, _, step, batch = compiled_train_step(tf, config, stage, overrides)
    setting = f"{stage} step, {cfg.train.batch_size} × {cfg.train.crop_size}²"
    return step, (batch,), setting


WORKERS = {"convolutions": convolutions}


# ---------------------------------------------------------------- plan and table (parent)


def plan(paper: bool, threads: int | None = None, paper_semi_batch: int = 4) -> list:
    """The rows, as :class:`bench.common.Measurement` objects: the side-by-side table's
    settings (:func:`bench.side_by_side.training_settings`); ``paper`` adds 32 × 256²."""

    found = [
        Measurement(
            "convolutions/inference/512",
            "convolutions",
            {"stage": "inference", "side": 512},
            "convolutions alone, one 512² image",
        )
    ]
    for name, stage, batch, crop, overrides in training_settings(paper, paper_semi_batch):
        found.append(
            Measurement(
                f"convolutions/{name}/{stage}",
                "convolutions",
                {"stage": stage, "overrides": overrides},
                f"convolutions alone, {stage} step, {batch} × {crop}²",
            )
        )
    for measurement in found:
        if threads:
            measurement.params["threads"] = threads
        if "/paper/" in measurement.key:
            measurement.timeout_s = PAPER_TIMEOUT_S
    return found


def alone_seconds(result: dict) -> float:
    """Seconds of all the graph's convolutions, each run alone."""
    return sum(entry["seconds"] for entry in result["convolutions"].values())


def shares_of_peak(result: dict) -> dict[str, float]:
    """The whole graph's and the ceiling's share of the peak, and each conv type's alone."""
    peak = result["peak_gflops"] * 1e9
    shares = {
        "whole": result["graph_flops"] / result["whole_s"] / peak,
        "ceiling": result["graph_flops"] / alone_seconds(result) / peak,
    }
    for op_type, entry in result["convolutions"].items():
        shares[op_type] = entry["flops"] / entry["seconds"] / peak
    return shares


def progress(result: dict) -> str:
    """The progress line's end for one row."""
    if "whole_s" not in result:
        return f"FAILED ({result.get('error')})"
    shares = shares_of_peak(result)
    return (
        f"whole {result['whole_s']:.3f} s ({shares['whole']:.0%} of peak), convolutions "
        f"alone {alone_seconds(result):.3f} s (ceiling {shares['ceiling']:.0%})"
    )


HEADER = [
    "measure",
    "GFLOP",
    "whole (s)",
    "convolutions alone (s)",
    "whole, of peak",
    "ceiling",
    "alone, of peak: forward / backprop input / backprop filter",
]


def rows(measurements: list) -> list[list[str]]:
    """One table row per measurement of this section."""
    found = []
    for m in measurements:
        if m.kind != "convolutions":
            continue
        r = m.result
        if "whole_s" not in r:
            found.append([m.title, failure_cell(r), "", "", "", "", ""])
            continue
        shares = shares_of_peak(r)
        by_type = " / ".join(f"{shares[t]:.0%}" for t in CONV_TYPES if t in shares)
        found.append(
            [
                r["setting"],
                fmt(r["graph_flops"] / 1e9, 1),
                fmt(r["whole_s"]),
                fmt(alone_seconds(r)),
                f"{shares['whole']:.0%}",
                f"{shares['ceiling']:.0%}",
                by_type,
            ]
        )
    return found


def report_section(measurements: list) -> str:
    """The table as markdown ('' when none of these measurements ran)."""
    found = rows(measurements)
    if not found:
        return ""
    peaks = [m.result["peak_gflops"] for m in measurements if "peak_gflops" in m.result]
    peak_line = (
        [
            f"- Peak: {min(peaks):.0f}–{max(peaks):.0f} GFLOP/s over these rows (each row divides "
            "by its own)."
        ]
        if peaks
        else []
    )
    return "\n".join(
        [
            "**What the convolutions alone take**: every convolution of the timed graph run "
            "alone, one after another, with the whole graph and a float32 2048² matmul (the "
            "peak) timed in the same process. *Ceiling*: the whole graph's GFLOP over the "
            "convolutions' time alone, i.e. its share of the peak if nothing else took any "
            "time. Where the convolutions alone take longer than the whole graph (small "
            "crops), the graph runs independent ones at the same time and the sum is no bound.",
            "",
            markdown_table(HEADER, found, "lrrrrrr"),
            "",
            *peak_line,
            "",
        ]
    )


def main(argv=None) -> int:
    parser = section_parser("python -m bench.convolutions", __doc__)
    parser.add_argument("--paper", action="store_true", help="add the paper setting (long)")
    args = parser.parse_args(argv)
    options = " --paper" if args.paper else ""
    options += f" --threads {args.threads}" if args.threads else ""
    measurements = plan(args.paper, args.threads)
    command = f"python -m bench.convolutions{options}"
    return run_section(
        "convolutions alone",
        measurements,
        report_section,
        lambda m: progress(m.result),
        args,
        command,
    )


if __name__ == "__main__":
    sys.exit(main())
