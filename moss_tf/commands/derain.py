"""``moss-derain INPUT --output OUT``: derain a photo or a folder of photos.

With no ``--preset``, ``--run-dir`` or ``--checkpoint`` it uses the shipped
model. The same as ``moss-evaluate --input INPUT --output OUT``::

    moss-derain rainy.jpg --output derained.png
    moss-derain my_photos/ --output derained/ --preset path/to/my_preset
"""

from __future__ import annotations

import argparse
import sys

from moss_tf.commands import evaluate
from moss_tf.commands.common import SHIPPED_PRESET


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="moss-derain",
        description=(
            f"Derain a photo or a folder of photos with the shipped model {SHIPPED_PRESET}, "
            "or the network --preset, --run-dir or --checkpoint names. Photos of any size "
            "are derained in seamless tiles; in a folder, one that cannot be read is named "
            "and skipped (exit code 1)."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="a photo, or a folder of photos")
    parser.add_argument(
        "--output",
        metavar="OUT",
        required=True,
        help="the folder the derained photos go to, or for one photo the file",
    )
    evaluate.add_inference_arguments(
        parser,
        "experiment YAML: with --run-dir names the run, with --checkpoint the model "
        "(default: the config.yaml beside the checkpoint)",
    )
    args = parser.parse_args(argv)
    args.test, args.json, args.per_image = None, None, False
    args.input_name = "INPUT"  # how evaluate.run names the photo path in its errors
    return args


def main(argv: list[str] | None = None) -> int:
    return evaluate.run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
