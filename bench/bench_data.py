"""Input-pipeline throughput next to what training consumes.

    .venv/bin/python -m bench.bench_data                      # demo and DDN-SIRR-like configs
    .venv/bin/python -m bench.bench_data --config configs/demo.yaml --seconds 5
    .venv/bin/python -m bench.bench_data --crop-size 128 --batch-size 16

Every config runs at ``--batch-size`` x ``--crop-size`` (default 8 x 64, not
the config's own sizes, so that configs compare and the training timing stays
short) with the config's data and network. For each config: the time to
build the pipelines (decoding every training image once), then crops per
second delivered by the labeled stream, the unlabeled stream and both
together (what stage ``semi`` reads), each timed for ``--seconds`` after a
warm-up. Training consumes ``batch_size`` crops per
``pretrain`` step and twice that per ``semi`` step; the script times real
training steps of the configured network on one fixed batch (no input
pipeline involved) and prints the ratio pipeline / training. The pipeline
is fast enough when the ratio is well above 1 (the project asks for 5x).
The same steps are then timed fed by the pipeline, which shares the CPU
with training: a rate equal to the fixed-batch one means no starving.

Configs whose data folders are missing (e.g. no ``../shared``) are reported
and skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ["demo", "ddn_sirr"]  # shipped configs, by name


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.bench_data", description=__doc__)
    parser.add_argument("--config", action="append", help="experiment YAML (repeatable)")
    parser.add_argument("--batch-size", type=int, default=8, help="crops per batch (8)")
    parser.add_argument("--crop-size", type=int, default=64, help="crop side in pixels (64)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timing per stream (8)")
    parser.add_argument(
        "--train-seconds", type=float, default=10.0, help="timing per training variant (10)"
    )
    parser.add_argument("--no-training", action="store_true", help="skip timing training steps")
    return parser.parse_args(argv)


def crops_per_second(dataset, crops_per_batch: int, seconds: float) -> float:
    """Crops per second read from ``dataset`` for ``seconds`` after a warm-up."""
    iterator = iter(dataset)
    warm_until = time.perf_counter() + min(2.0, seconds / 2)
    while time.perf_counter() < warm_until:  # fills prefetch buffers, tunes AUTOTUNE
        next(iterator)
    batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(iterator)
        batches += 1
    return batches * crops_per_batch / (time.perf_counter() - start)


def training_steps_per_second(cfg, stage: str, batches, seconds: float) -> tuple[float, float]:
    """Steps per second of the real training step: on one fixed batch, and fed by ``batches``.

    The first number is what training can consume; the second shows whether
    the pipeline, sharing the CPU with training, keeps up.
    """
    import tensorflow as tf

    from moss_tf.train.stage import build_trainer

    trainer = build_trainer(cfg, stage)
    step = tf.function(trainer.train_step)
    iterator = iter(batches)
    fixed = next(iterator)
    step(fixed)  # trace
    step(next(iterator))
    rates = []
    for feed in (lambda: fixed, lambda: next(iterator)):
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            float(step(feed())["loss"])  # wait for the step to finish
            steps += 1
        rates.append(steps / (time.perf_counter() - start))
    return rates[0], rates[1]


def bench_config(path: Path, args) -> None:
    import tensorflow as tf

    from moss_tf.config import load_config
    from moss_tf.data import build_training_data
    from moss_tf.errors import MossError

    sizes = [f"train.batch_size={args.batch_size}", f"train.crop_size={args.crop_size}"]
    cfg = load_config(path, sizes)
    batch, crop = cfg.train.batch_size, cfg.train.crop_size
    print(f"\n== {path.name}: batch {batch}, {crop}x{crop} crops")
    start = time.perf_counter()
    try:
        data = build_training_data(
            cfg.data, batch_size=batch, crop_size=crop, seed=cfg.train.seed, with_unlabeled=True
        )
    except MossError as err:
        print(f"   skipped: {err}")
        return
    print(f"   build (decode all training images): {time.perf_counter() - start:.1f} s")
    for line in data.description.splitlines():
        print(f"   {line}")
    labeled = crops_per_second(data.labeled, batch, args.seconds)
    unlabeled = crops_per_second(data.unlabeled, batch, args.seconds)
    both = crops_per_second(
        tf.data.Dataset.zip(data.labeled, data.unlabeled), 2 * batch, args.seconds
    )
    print(f"   pipeline  labeled {labeled:8.0f} crops/s")
    print(f"   pipeline  unlabeled {unlabeled:6.0f} crops/s")
    print(f"   pipeline  both (semi) {both:4.0f} crops/s")
    if args.no_training:
        return
    both_streams = tf.data.Dataset.zip(data.labeled, data.unlabeled)
    for stage, batches, crops, delivered in (
        ("pretrain", data.labeled, batch, labeled),
        ("semi", both_streams, 2 * batch, both),
    ):
        alone, fed = training_steps_per_second(cfg, stage, batches, args.train_seconds)
        needed = alone * crops
        print(
            f"   training  {stage:8s} {alone:5.2f} steps/s = {needed:5.0f} crops/s consumed; "
            f"pipeline is {delivered / needed:5.1f}x faster; "
            f"fed by the pipeline: {fed:5.2f} steps/s"
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    configs = [Path(c) for c in args.config] if args.config else DEFAULT_CONFIGS
    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores")
    for path in configs:
        bench_config(path, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
