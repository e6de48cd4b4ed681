"""Command-line pieces shared by ``train.py``, ``evaluate.py`` and ``python -m moss_tf.export``."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """``--config FILE`` and repeatable ``--set KEY=VALUE``."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.steps=100 (repeatable)",
    )


def add_model_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--run-dir DIR`` or ``--checkpoint FILE``: where a trained network comes from."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    source.add_argument("--checkpoint", help="a *.weights.h5 file instead of a run directory")


def default_run_dir(config_name: str) -> Path:
    """``runs/<config name>``, relative to the current directory."""
    return Path("runs") / config_name


def load_experiment(args: argparse.Namespace):
    """The experiment config of ``--config`` (default demo) with the ``--set`` overrides."""
    from moss_tf.config import load_config

    return load_config(args.config or DEFAULT_CONFIG, args.overrides)


def load_trained_network(args: argparse.Namespace, cfg):
    """The network named by ``--checkpoint`` or ``--run-dir`` (default ``runs/<cfg.name>``).

    Returns:
        ``(network, source)``: a built MOSSNet and the path it came from.
    """
    from moss_tf.checkpoints import load_network

    if args.checkpoint:
        network, _ = load_network(checkpoint=args.checkpoint, config_path=args.config)
        return network, Path(args.checkpoint)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name)
    network, _ = load_network(run_dir=run_dir)
    return network, run_dir
