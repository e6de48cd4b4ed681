"""What the benchmark's worker processes share: timing, CPU use, peak memory, a compiled step.

Imported by the measurements that :mod:`bench._worker` runs in processes
of their own (its own, :mod:`bench.side_by_side_workers`,
:mod:`bench.memory_modes`, :mod:`bench.convolutions`); the parent side's
helpers are in :mod:`bench.common`.
"""

from __future__ import annotations

import resource
import sys
import time

import moss_tf  # noqa: F401  (sets TensorFlow's CPU options before TensorFlow starts)


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


def setup_tensorflow(threads: int | None = None):
    """TensorFlow with its logger quiet and, if given, ``threads`` intra- and inter-op threads."""
    import tensorflow as tf

    # The profiler's v1 helpers log deprecation warnings that say nothing here.
    tf.get_logger().setLevel("ERROR")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def synthetic_batch(tf, stage: str, batch: int, crop: int):
    """A fixed batch in [-1, 1]: ``(rainy, clean)``, plus unlabeled rainy for ``semi``."""
    shape = [batch, crop, crop, 3]
    clean = tf.random.stateless_uniform(shape, (1, 0), -1.0, 1.0)
    rain = tf.random.stateless_uniform(shape, (2, 0), 0.0, 0.5)
    rainy = tf.clip_by_value(clean + rain, -1.0, 1.0)
    if stage == "pretrain":
        return rainy, clean
    unlabeled = tf.random.stateless_uniform(shape, (3, 0), -1.0, 1.0)
    return (rainy, clean), unlabeled


def compiled_train_step(tf, config: str, stage: str, overrides: list[str]):
    """``(cfg, trainer, step, batch)``: ``trainer.train_step`` as ``train.py`` compiles it.

    The trainer is built by :func:`moss_tf.train.stage.build_trainer` from
    ``config`` plus ``overrides`` (``KEY=VALUE``) under the config's precision
    policy (layers keep the policy they were built with), the step is a
    ``tf.function`` (XLA when ``train.jit_compile``), and ``batch`` is one
    fixed synthetic batch of the config's size (:func:`synthetic_batch`).
    """
    from moss_tf.config import load_config
    from moss_tf.train.stage import build_trainer, precision_policy

    cfg = load_config(config, overrides)
    with precision_policy(cfg):  # as moss_tf.train.stage.run_stage builds it
        trainer = build_trainer(cfg, stage)
    step = tf.function(trainer.train_step, jit_compile=cfg.train.jit_compile)
    batch = synthetic_batch(tf, stage, cfg.train.batch_size, cfg.train.crop_size)
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
