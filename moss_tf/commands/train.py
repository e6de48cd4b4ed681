"""Train MOSS: ``python train.py --stage pretrain`` then ``python train.py --stage semi``.

Stage ``pretrain`` is supplementary Algorithm 1 (supervised, labeled pairs);
stage ``semi`` is Algorithm 2 (memory + self-training with an EMA target on
labeled and unlabeled images), starting from the pretrained network in the
same run directory.

Examples::

    python train.py --stage pretrain                      # configs/demo.yaml, runs/demo
    python train.py --stage semi
    python train.py --stage pretrain --config configs/ddn_sirr.yaml --set train.steps=20000
    python train.py --stage semi --resume                 # continue after a crash

A run directory belongs to one run at a time: a second ``train.py`` on a run
directory in use is refused at once, naming the run that holds it
(``<run-dir>/train.lock``, see moss_tf/train/run_lock.py). Errors are one line
``error: ...`` naming the file, key or value at fault; exit code 2 when the
run could not start, 1 when it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from moss_tf.commands.common import (
    add_config_arguments,
    add_verbose_argument,
    default_run_dir,
    load_experiment,
    report_error,
    start_tensorflow,
)
from moss_tf.errors import MossError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train MOSS (pretrain: Algorithm 1; semi: Algorithm 2).",
    )
    parser.add_argument("--stage", required=True, choices=["pretrain", "semi"])
    add_config_arguments(parser, "experiment YAML (default: configs/demo.yaml)")
    parser.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the stage's last checkpoint"
    )
    parser.add_argument(
        "--init",
        help="network weights to start from (semi: default <run-dir>/pretrain/best.weights.h5, "
        "the pretrained network evaluate.py scored)",
    )
    add_verbose_argument(parser)
    return parser.parse_args(argv)


def check_before_starting(args):
    """The config, run directory, checkpoint and starting weights, checked before TensorFlow."""
    from moss_tf.train.checkpoints import read_meta
    from moss_tf.train.run_dir import StagePaths, check_can_create, initial_weights

    cfg = load_experiment(args, check_paths=True)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name)
    initial_weights(args.stage, run_dir, args.resume, args.init)
    check_can_create(run_dir)
    last = StagePaths(run_dir, args.stage).last
    if args.resume and last.is_file():
        read_meta(last)  # an empty or damaged checkpoint is named now, not after start-up
    return cfg, run_dir


def main(argv=None) -> int:
    args = parse_args(argv)
    from moss_tf.train.run_lock import hold_run_dir

    with contextlib.ExitStack() as held:
        try:
            cfg, run_dir = check_before_starting(args)
            held.enter_context(hold_run_dir(run_dir))
        except (MossError, OSError) as err:
            return report_error(err, code=2)
        return train(args, cfg, run_dir)


def train(args, cfg, run_dir: Path) -> int:
    """Start TensorFlow and run the stage; the exit code (1: stopped with an error)."""
    start_tensorflow(args.verbose)
    from moss_tf.train.stage import run_stage

    try:
        run_stage(cfg, args.stage, run_dir, resume=args.resume, init=args.init)
    except (MossError, OSError) as err:
        return report_error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
