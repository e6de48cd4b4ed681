"""``moss-score DERAINED_DIR CLEAN_DIR``: score any method's outputs against clean images.

Prints mean PSNR / SSIM in the paper's convention (RGB, scikit-image SSIM 7x7)
and the community's (MATLAB Y channel, Gaussian SSIM 11x11); files are paired
by name without the ending::

    moss-score results/prenet/ data/Rain100L/norain/ --json prenet.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moss_tf.commands.common import report_error
from moss_tf.errors import MossError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Score derained images against clean references (PSNR/SSIM, RGB and Y)."
    )
    parser.add_argument("derained", help="folder of derained images (any method's)")
    parser.add_argument("clean", help="folder of clean references, same file names")
    parser.add_argument("--json", metavar="FILE", help="also write the scores, per image too")
    parser.add_argument("--per-image", action="store_true", help="print a line per image")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from moss_tf.infer.score_files import score_folders

    try:
        scores = score_folders(args.derained, args.clean)
    except (MossError, OSError) as err:
        return report_error(err)
    if args.per_image:
        for name, row in scores["images"].items():
            print(f"{name:<32} {_cells(row)}")
    print(f"{'PSNR':>7} {'SSIM':>7} {'PSNR-Y':>7} {'SSIM-Y':>7}  n")
    print(f"{_cells(scores)}  {scores['n']}")
    print("PSNR/SSIM: paper convention (RGB, SSIM 7x7); -Y: community convention (Y, SSIM 11x11)")
    if scores["unpaired"]:
        print(f"{scores['unpaired']} derained file(s) have no clean reference of the same name")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        print(f"scores written to {path}")
    return 0


def _cells(row: dict) -> str:
    return (
        f"{row['psnr_rgb']:7.2f} {row['ssim_rgb']:7.4f} {row['psnr_y']:7.2f} {row['ssim_y']:7.4f}"
    )


if __name__ == "__main__":
    sys.exit(main())
