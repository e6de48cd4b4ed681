"""Does a recipe keep the released network's scales bounded? A stress test (issue 10).

    .venv/bin/python -m bench.stability                       # both recipes, 300 steps at lr 1e-3
    .venv/bin/python -m bench.stability --steps 2000 --set train.learning_rate=2e-4

Trains stage ``pretrain`` of ``configs/ddn_sirr.yaml`` (released network,
batch 8, 64² crops by default) with the code ``train.py`` runs
(:func:`moss_tf.train.stage.build_trainer` and
:func:`~moss_tf.train.stage.training_dataset`), once with the default recipe and
once with the authors' (``train.feature_scale_weight=0``), and prints, every
``--every`` steps, the loss, the mean memory-item norm, the largest
batch-norm moving variance and the RMS of each encoder stage's output. The
learning rate is 5x the paper's by default so that the authors' recipe
diverges within minutes instead of after ~1,900 steps.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

RECIPES = {"default": [], "authors": ["train.feature_scale_weight=0"]}
DEFAULTS = ["train.batch_size=8", "train.crop_size=64", "train.learning_rate=1e-3"]


def run(config: str, overrides: list[str], steps: int, every: int) -> None:
    import keras
    import tensorflow as tf

    from moss_tf.config import load_config
    from moss_tf.train.divergence import scale_signals
    from moss_tf.train.stage import build_trainer, training_dataset

    cfg = load_config(config, overrides)
    keras.utils.set_random_seed(cfg.train.seed)
    trainer = build_trainer(cfg, "pretrain")
    batches = iter(training_dataset(cfg, "pretrain", 0))
    step_fn = tf.function(trainer.train_step)
    print("step  loss  memory_item_norm  bn_moving_variance_max  encoder RMS f0..f4", flush=True)
    for step in range(1, steps + 1):
        batch = next(batches)
        logs = step_fn(batch)
        if step % every and step != 1:
            continue
        _, features = trainer.online.call_with_features(batch[0], training=False)
        rms = [float(tf.sqrt(tf.reduce_mean(tf.square(f)))) for f in features]
        scales = scale_signals(trainer.online)
        print(
            f"{step:5d}  {float(logs['loss']):.4g}  {scales['memory_item_norm']:.3g}  "
            f"{scales['bn_moving_variance_max']:.3g}  " + " ".join(f"{r:.3g}" for r in rms),
            flush=True,
        )
        for tracker in trainer.metrics:
            tracker.reset_state()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stability", description=__doc__)
    parser.add_argument("--config", default="configs/ddn_sirr.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE, repeatable")
    parser.add_argument("--recipe", choices=list(RECIPES), help="one recipe, in this process")
    args = parser.parse_args(argv)
    overrides = [*DEFAULTS, *args.set]
    if args.recipe:
        run(args.config, [*overrides, *RECIPES[args.recipe]], args.steps, args.every)
        return 0
    for recipe in RECIPES:  # each in a fresh process: no state shared between them
        print(f"\n== recipe: {recipe} ({' '.join(overrides + RECIPES[recipe])})", flush=True)
        command = [sys.executable, "-m", "bench.stability", "--recipe", recipe]
        command += ["--config", args.config, "--steps", str(args.steps), "--every", str(args.every)]
        for override in args.set:
            command += ["--set", override]
        subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
