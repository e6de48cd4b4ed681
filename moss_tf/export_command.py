"""``python -m moss_tf.export``: the command line, kept apart from TensorFlow.

:mod:`moss_tf.export` hands its ``__main__`` over to :func:`main` before it
imports TensorFlow, so a wrong argument is reported at once.
"""

from __future__ import annotations

import argparse
import sys

from moss_tf.cli import (
    add_config_arguments,
    add_inference_memory_argument,
    add_model_source_arguments,
    add_verbose_argument,
    check_model_source,
    load_experiment,
    load_trained_network,
    start_tensorflow,
)
from moss_tf.data.images import MAX_PIXELS
from moss_tf.errors import MossError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m moss_tf.export",
        description="Export a trained network as the next TF Serving version folder.",
    )
    add_config_arguments(
        parser,
        "experiment YAML naming the run (default: configs/demo.yaml); with --checkpoint "
        "also its model (default: the config.yaml beside the checkpoint)",
    )
    add_model_source_arguments(parser)
    add_inference_memory_argument(parser)
    parser.add_argument(
        "--output", default="saved_models/moss", help="model base folder (saved_models/moss)"
    )
    parser.add_argument(
        "--jit-compile", action="store_true", help="compile with XLA (slower on CPU; see README)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="both signatures refuse images with more pixels (default: the command "
        f"line's limit, {MAX_PIXELS:,})",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="larger images are derained in tiles of this size (default: evaluate.py's)",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="tile overlap in pixels (default: evaluate.py's)",
    )
    add_verbose_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = None if args.checkpoint else load_experiment(args)
        check_model_source(args, cfg)
        start_tensorflow(args.verbose)
        from moss_tf.export import export_saved_model

        net, _ = load_trained_network(args, cfg)
        version = export_saved_model(
            net,
            args.output,
            jit_compile=args.jit_compile,
            max_pixels=args.max_pixels,
            tile_size=args.tile_size,
            overlap=args.overlap,
        )
    except MossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"exported {version}")
    print(f"inspect: saved_model_cli show --dir {version} --all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
