"""Evaluate a trained MOSS network, or derain your own photos.

Test sets (PSNR / SSIM in the paper's and the community's conventions)::

    python evaluate.py                                  # configs/demo.yaml, runs/demo
    python evaluate.py --config configs/ddn_sirr.yaml --json results.json --output results/
    python evaluate.py --checkpoint runs/demo/semi/best.weights.h5 --test data/Rain100L

Your own photos (any size and format; large ones in seamless tiles), with the
shipped preset moss_release unless --preset, --run-dir or --checkpoint names another::

    python evaluate.py --input my_photos/ --output derained/
    python evaluate.py --input rainy.jpg --output derained/ --run-dir runs/demo

In a folder, a photo that cannot be derained (unreadable, truncated, smaller
than 8 pixels on a side, over --max-pixels) is named on stderr and skipped;
the others are written (exit code 1 when any was skipped). The output folder
is checked before the network is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from moss_tf.commands.common import (
    SHIPPED_PRESET,
    add_config_arguments,
    add_inference_memory_argument,
    add_model_source_arguments,
    add_verbose_argument,
    check_model_source,
    load_experiment,
    load_trained_network,
    report_error,
    start_tensorflow,
    use_shipped_model_unless_given,
)
from moss_tf.data.images import MAX_PIXELS
from moss_tf.errors import ConfigError, MossError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "Score a trained network on paired test sets (a table, --json, --output panels), "
            "or derain your own photos with --input PATH --output DIR."
        ),
    )
    add_inference_arguments(
        parser,
        "experiment YAML: names the run and the test data (default: configs/demo.yaml); "
        "with --checkpoint also its model (default: the config.yaml beside the checkpoint)",
    )
    parser.add_argument(
        "--test",
        nargs="+",
        metavar="PATH",
        help="paired test folder(s) in any supported layout, replacing the config's test sets",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--per-image",
        action="store_true",
        help="the JSON also holds every image's numbers (under 'images'; needs --json)",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="save derained images and rainy|derained|clean panels here "
        "(with --input: the folder the derained photos go to, or for one photo the file)",
    )
    parser.add_argument(
        "--input",
        metavar="PATH",
        help="derain this photo or folder of photos (needs --output) with the shipped model "
        f"{SHIPPED_PRESET} unless --preset, --run-dir or --checkpoint names another",
    )
    args = parser.parse_args(argv)
    if args.input and not args.output:
        parser.error("--input needs --output DIR (where the derained photos are written)")
    if args.per_image and not args.json:
        parser.error("--per-image writes every image's numbers into the --json FILE: give --json")
    if args.input and (args.test or args.json):
        parser.error("--input derains photos; --test and --json apply to paired test sets only")
    args.input_name = "--input"
    return args


def add_inference_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """The options of any run of a trained network: which one, and how it sees a photo."""
    add_config_arguments(parser, config_help)
    add_model_source_arguments(parser)
    add_inference_memory_argument(parser)
    parser.add_argument(
        "--tile-size", type=int, default=512, help="images larger than this are tiled (512)"
    )
    parser.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (64)")
    parser.add_argument(
        "--max-pixels",
        type=_positive_int,
        metavar="N",
        help="refuse images with more pixels, unread, as possible decompression bombs "
        f"(default {MAX_PIXELS:,} = 8192 x 8192, or the config's data.max_pixels)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_verbose_argument(parser)


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _test_sets(cfg, paths):
    """Split name -> dataset: the config's test sets, or those of each ``--test`` path."""
    from moss_tf.data import build_test_sets

    if not paths:
        return build_test_sets(cfg.data)
    sets = {}
    for path in paths:
        folder = Path(path).name
        data = dataclasses.replace(cfg.data, test=path, validation={})
        for split, dataset in build_test_sets(data).items():
            # Several folders may each have e.g. "dense"/"sparse": prefix the folder.
            name = split if len(paths) == 1 or split == folder else f"{folder}/{split}"
            sets[name] = dataset
    return sets


def check_before_starting(args):
    """The config, the trained network and the input paths, checked before TensorFlow starts."""
    cfg = load_experiment(args, check_paths=not (args.input or args.test))
    if args.max_pixels is not None:
        cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, max_pixels=args.max_pixels)
        )
    check_model_source(args, cfg)
    named = (
        [(args.input_name, args.input)] if args.input else [("--test", p) for p in args.test or []]
    )
    for option, path in named:
        if not Path(path).exists():
            raise ConfigError(f"{option} {path}: not found")
    check_outputs(args)
    return cfg


def check_outputs(args) -> None:
    """``--output`` and ``--json`` must be writable: said now, not after the inference."""
    from moss_tf.files import check_output_folder, check_writable_folder

    if args.output:
        check_output_folder(args.output, args.input)
    if args.json:
        if Path(args.json).is_dir():
            raise ConfigError(f"--json {args.json}: is a folder; name a file")
        check_writable_folder(Path(args.json).parent, "--json file's folder")


def main(argv=None) -> int:
    return run(parse_args(argv))


def run(args) -> int:
    """Score the test sets, or derain ``args.input``, as ``args`` (parsed options) say."""
    if args.input and use_shipped_model_unless_given(args):
        print(
            f"using the shipped model {args.preset} "
            "(--preset, --run-dir or --checkpoint for another)"
        )
    try:
        cfg = check_before_starting(args)
        start_tensorflow(args.verbose)
        from moss_tf.infer.derain import Derainer

        net, source = load_trained_network(args, cfg)
        derainer = Derainer(net, tile_size=args.tile_size, overlap=args.overlap)

        if args.input:
            from moss_tf.infer.derain import derain_files

            written, skipped = derain_files(
                derainer,
                args.input,
                args.output,
                progress=not args.quiet,
                max_pixels=cfg.data.max_pixels,
            )
            for message in skipped:
                print(f"skipped {message}", file=sys.stderr)
            print(f"{len(written)} derained image(s) written to {args.output}")
            return 1 if skipped else 0

        from moss_tf.infer.scoring import evaluate, format_table, write_json

        results = evaluate(
            derainer,
            _test_sets(cfg, args.test),
            output_dir=args.output,
            progress=not args.quiet,
            per_image=args.per_image,
        )
    except (MossError, OSError) as err:
        return report_error(err)
    if not results["splits"]:
        print("error: the test sets hold no images", file=sys.stderr)
        return 1
    print(f"\nmodel: {source}")
    print(format_table(results))
    if args.json:
        print(f"results written to {write_json({**results, 'model': str(source)}, args.json)}")
    if args.output:
        print(f"derained images and panels saved under {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
