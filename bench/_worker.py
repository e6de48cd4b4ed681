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
import resource
import sys
import tempfile
import time
from pathlib import Path

import moss_tf  # noqa: F401  (sets TensorFlow's CPU options before TensorFlow starts)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULT_PREFIX = "BENCH_RESULT "


class CoresUsed:
    """CPU time over wall time of a block: about the core count when nothing else runs.

    ``with CoresUsed() as usage: ...`` then ``usage.cores``; far below the
    core count means other programs took CPU time while this one was timed.
    """

    def __enter__(self):
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self._wall
        self.cores = (time.process_time() - self._cpu) / max(wall, 1e-9)


def max_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def _setup_tensorflow(threads: int | None):
    import tensorflow as tf

    # The profiler's v1 helpers log deprecation warnings that say nothing here.
    tf.get_logger().setLevel("ERROR")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


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
    The Keras variant also counts forward FLOPs at ``flop_sizes`` (traced
    only, not run).
    """
    tf = _setup_tensorflow(threads)
    from bench.bench_inference import timed
    from bench.flops import function_flops
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
                }
            )
    return result


def _synthetic_batch(tf, stage: str, batch: int, crop: int):
    """A fixed batch in [-1, 1]: ``(rainy, clean)``, plus unlabeled rainy for ``semi``."""
    shape = [batch, crop, crop, 3]
    clean = tf.random.stateless_uniform(shape, (1, 0), -1.0, 1.0)
    rain = tf.random.stateless_uniform(shape, (2, 0), 0.0, 0.5)
    rainy = tf.clip_by_value(clean + rain, -1.0, 1.0)
    if stage == "pretrain":
        return rainy, clean
    unlabeled = tf.random.stateless_uniform(shape, (3, 0), -1.0, 1.0)
    return (rainy, clean), unlabeled


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
    tf = _setup_tensorflow(threads)
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


def compiled_train_step(tf, config: str, stage: str, overrides: list[str]):
    """``(cfg, trainer, step, batch)``: ``trainer.train_step`` as ``train.py`` compiles it.

    The trainer is built by :func:`moss_tf.train.stage.build_trainer` from
    ``config`` plus ``overrides`` (``KEY=VALUE``) under the config's precision
    policy (layers keep the policy they were built with), the step is a
    ``tf.function`` (XLA when ``train.jit_compile``), and ``batch`` is one
    fixed synthetic batch of the config's size (:func:`_synthetic_batch`).
    """
    from moss_tf.config import load_config
    from moss_tf.train.stage import build_trainer, precision_policy

    cfg = load_config(config, overrides)
    with precision_policy(cfg):  # as moss_tf.train.stage.run_stage builds it
        trainer = build_trainer(cfg, stage)
    step = tf.function(trainer.train_step, jit_compile=cfg.train.jit_compile)
    batch = _synthetic_batch(tf, stage, cfg.train.batch_size, cfg.train.crop_size)
    return cfg, trainer, step, batch


def time_steps(run_step, min_steps: int, seconds: float) -> dict:
    """Time ``run_step()`` (one training step that returns when it is done).

    The first call (tracing, warm-up) is timed on its own; then at least
    ``min_steps`` steps and at least ``seconds`` seconds are.

    Returns:
        ``first_step_s``, ``steps``, ``seconds_per_step``, ``cores_used``
        and ``peak_rss_mb``.
    """
    start = time.perf_counter()
    run_step()
    first = time.perf_counter() - start
    with CoresUsed() as usage:
        steps = call_timings(run_step, min_steps, seconds)
    return {
        "first_step_s": first,
        "steps": len(steps),
        "seconds_per_step": sum(steps) / len(steps),
        "cores_used": usage.cores,
        "peak_rss_mb": max_rss_mb(),
    }


def call_timings(call, min_calls: int, seconds: float) -> list[float]:
    """Seconds of each ``call()``, called until at least ``min_calls`` calls and ``seconds``.

    On the CPU a TensorFlow call returns when its ops are done.
    """
    timings, start = [], time.perf_counter()
    while len(timings) < min_calls or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        call()
        timings.append(time.perf_counter() - begin)
    return timings


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
    tf = _setup_tensorflow(threads)
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
    from bench import convolutions, memory_modes, side_by_side_workers

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
