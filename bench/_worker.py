"""One benchmark measurement in a process of its own (run by ``python -m bench``).

    python -m bench._worker inference '{"variant": "keras", "sizes": [256], "runs": 3}'
    python -m bench._worker training '{"config": "configs/demo.yaml", "stage": "pretrain"}'
    python -m bench._worker pipeline '{"config": "configs/demo.yaml"}'

A fresh process per measurement makes its peak resident memory (max RSS)
its own: nothing left over from an earlier measurement counts. The result
is printed as one JSON line starting with ``BENCH_RESULT`` (the last line of
stdout); it always holds ``baseline_rss_mb`` (the process after importing
TensorFlow and building the network) and ``peak_rss_mb``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import convolutions, memory_modes, side_by_side_workers
from bench.common import RESULT_PREFIX
from bench.worker_tools import (  # imports moss_tf, which sets TensorFlow's CPU options
    CoresUsed,
    compiled_train_step,
    max_rss_mb,
    setup_tensorflow,
    time_steps,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def inference(
    variant: str,
    sizes: list[int],
    flop_sizes: list[int],
    warmup: int = 1,
    runs: int = 3,
    threads: int | None = None,
) -> dict:
    """Latency of one ``[1, S, S, 3]`` image through the released-size network.

    ``variant`` is ``"keras"`` (``net(x, training=False)`` in a
    ``tf.function``, input in [-1, 1]) or ``"savedmodel"`` (exported by
    :func:`moss_tf.export.saved_model.export_saved_model`, reloaded, its
    ``serving_default`` signature, input in [0, 1]). Sizes run in increasing
    order, so the peak memory read after each size is that size's peak.
    A SavedModel latency row says ``tiled`` when the image is larger than the
    export's tile: it then runs the command line's tiles and two passes, more
    arithmetic than the whole-image FLOP count.
    The Keras variant also counts forward FLOPs at ``flop_sizes`` (traced
    only, not run).
    """
    tf = setup_tensorflow(threads)
    from bench.bench_inference import timed
    from bench.flops import function_flops
    from moss_tf.infer.derain import DEFAULT_TILE_SIZE
    from moss_tf.nn.network import MOSSNet

    net = MOSSNet()
    net.build()
    result = {"variant": variant, "latency": [], "forward_flops": []}
    with tempfile.TemporaryDirectory() as folder:
        if variant == "keras":
            fn = tf.function(lambda x: net(x, training=False))
            low = -1.0  # the network's own range
            for side in flop_sizes:
                spec = tf.TensorSpec([1, side, side, 3], tf.float32)
                counts = function_flops(fn.get_concrete_function(spec))
                result["forward_flops"].append({"size": side, "flops": counts})
        elif variant == "savedmodel":
            from moss_tf.export.saved_model import DEFAULT_SIGNATURE, export_saved_model

            version = export_saved_model(net, Path(folder) / "moss", warmup=False)
            serve = tf.saved_model.load(str(version)).signatures[DEFAULT_SIGNATURE]

            def fn(x):
                return serve(images=x)["derained"]

            low = 0.0  # serving_default takes [0, 1]
        else:
            raise ValueError(f"variant must be 'keras' or 'savedmodel', got {variant!r}")
        result["baseline_rss_mb"] = max_rss_mb()
        for side in sorted(sizes):
            image = tf.random.stateless_uniform([1, side, side, 3], (side, 0), low, 1.0)
            with CoresUsed() as usage:
                median, fastest = timed(fn, image, warmup, runs)
            result["latency"].append(
                {
                    "size": side,
                    "median_s": median,
                    "fastest_s": fastest,
                    "runs": runs,
                    "cores_used": usage.cores,
                    "peak_rss_mb": max_rss_mb(),
                    "tiled": variant == "savedmodel" and side > DEFAULT_TILE_SIZE,
                }
            )
    return result


def training(
    config: str,
    stage: str,
    overrides: list[str] | None = None,
    min_steps: int = 3,
    seconds: float = 3.0,
    threads: int | None = None,
) -> dict:
    """Seconds per ``trainer.train_step`` on one fixed synthetic batch.

    The network, trainer and optimizer are built by
    :func:`moss_tf.train.stage.build_trainer` from ``config`` (plus
    ``overrides``, ``KEY=VALUE``), the step compiled with ``tf.function``
    as in training (XLA when ``train.jit_compile``). The first call traces
    and warms up and is not timed; then steps run until at least
    ``min_steps`` steps and ``seconds`` have passed. FLOPs are counted from
    the traced step graph (forward, backward, Adam, EMA target update).
    """
    tf = setup_tensorflow(threads)
    from bench.flops import forward_flops, function_flops

    cfg, trainer, step, batch = compiled_train_step(tf, config, stage, overrides or [])
    result = {
        "config": config,
        "stage": stage,
        "batch_size": cfg.train.batch_size,
        "crop_size": cfg.train.crop_size,
        "step_flops": function_flops(step.get_concrete_function(batch)),
        "forward_flops_per_crop": forward_flops(trainer.online, cfg.train.crop_size),
        "baseline_rss_mb": max_rss_mb(),
    }
    result.update(time_steps(lambda: float(step(batch)["loss"]), min_steps, seconds))
    return result


def pipeline(
    config: str,
    seconds: float = 3.0,
    threads: int | None = None,
    overrides: list[str] | None = None,
) -> dict:
    """Crops per second of the training input pipeline of ``config`` at its batch and crop size.

    Times the labeled stream (what stage ``pretrain`` reads) and both streams
    zipped (stage ``semi``) with :func:`bench.bench_data.crops_per_second`.
    ``overrides`` (``KEY=VALUE``) change the config, e.g. its labeled pairs.
    A config whose data is missing reports ``skipped`` with the reason.
    """
    tf = setup_tensorflow(threads)
    from bench.bench_data import crops_per_second
    from moss_tf.config import load_config
    from moss_tf.data import build_training_data
    from moss_tf.errors import MossError

    cfg = load_config(config, overrides or [])
    batch, crop = cfg.train.batch_size, cfg.train.crop_size
    result = {"config": config, "batch_size": batch, "crop_size": crop}
    if cfg.data.labeled.pairs is not None:
        result["pairs"] = cfg.data.labeled.pairs
    start = time.perf_counter()
    try:
        data = build_training_data(
            cfg.data, batch_size=batch, crop_size=crop, seed=cfg.train.seed, with_unlabeled=True
        )
    except MossError as err:
        return {**result, "skipped": str(err), "peak_rss_mb": max_rss_mb()}
    result["build_s"] = time.perf_counter() - start
    result["baseline_rss_mb"] = max_rss_mb()
    with CoresUsed() as usage:
        result["labeled_crops_per_s"] = crops_per_second(data.labeled, batch, seconds)
        both = tf.data.Dataset.zip(data.labeled, data.unlabeled)
        result["semi_crops_per_s"] = crops_per_second(both, 2 * batch, seconds)
    result["cores_used"] = usage.cores
    result["peak_rss_mb"] = max_rss_mb()
    return result


MEASUREMENTS = {"inference": inference, "training": training, "pipeline": pipeline}


def main(argv=None) -> int:
    kinds = {
        **MEASUREMENTS,
        **side_by_side_workers.MEASUREMENTS,
        **memory_modes.WORKERS,
        **convolutions.WORKERS,
    }
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in kinds:
        print(f"usage: python -m bench._worker {{{','.join(kinds)}}} JSON", file=sys.stderr)
        return 2
    from moss_tf.errors import MossError

    try:
        result = kinds[argv[0]](**json.loads(argv[1]))
    except MossError as err:  # a config or data problem: one sentence, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
