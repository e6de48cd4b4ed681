"""``moss-export`` (or ``python -m moss_tf.export``): a trained network to a TF Serving folder.

The arguments and config are checked before TensorFlow starts, so a mistake is
reported at once; :mod:`moss_tf.export.saved_model` does the exporting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moss_tf.commands.common import (
    add_config_arguments,
    add_inference_memory_argument,
    add_model_source_arguments,
    add_verbose_argument,
    check_model_source,
    load_experiment,
    load_trained_network,
    report_error,
    start_tensorflow,
)
from moss_tf.data.images import MAX_PIXELS
from moss_tf.errors import MossError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
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
        "--output",
        required=True,
        help="model base folder TF Serving watches, e.g. exports/moss (version 1/, 2/, ... inside)",
    )
    parser.add_argument(
        "--add-version",
        action="store_true",
        help="export into a base folder that already holds versions: the new one then "
        "replaces them in TF Serving (it serves the highest version)",
    )
    parser.add_argument(
        "--jit-compile",
        action="store_true",
        help="compile with XLA (slower on CPU; docs/serving.md)",
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
        help="larger images are derained in tiles of this size (default: moss-derain's)",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="tile overlap in pixels (default: moss-derain's)",
    )
    add_verbose_argument(parser)
    return parser.parse_args(argv)


def refuse_to_shadow(base: Path, add_version: bool) -> None:
    """Raise MossError when ``base`` holds versions and ``--add-version`` was not given.

    TF Serving serves the highest version of a base folder, so a new export
    there replaces the model being served (e.g. the shipped one in
    ``saved_models/moss``).
    """
    versions = sorted(p.name for p in base.glob("[0-9]*") if p.is_dir()) if base.is_dir() else []
    if versions and not add_version:
        raise MossError(
            f"{base}: already holds version(s) {', '.join(versions)}; a new version would "
            "replace them in TF Serving. Choose another --output, or pass --add-version"
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = None if args.checkpoint or args.preset else load_experiment(args)
        check_model_source(args, cfg)
        refuse_to_shadow(Path(args.output), args.add_version)
        start_tensorflow(args.verbose)
        from moss_tf.export.saved_model import export_saved_model

        net, _ = load_trained_network(args, cfg)
        version = export_saved_model(
            net,
            args.output,
            jit_compile=args.jit_compile,
            max_pixels=args.max_pixels,
            tile_size=args.tile_size,
            overlap=args.overlap,
        )
    except (MossError, OSError) as err:
        return report_error(err)
    print(f"exported {version}")
    print(f"inspect: saved_model_cli show --dir {version} --all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
