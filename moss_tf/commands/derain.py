"""``moss-derain INPUT --output OUT``: derain a photo or a folder of photos.

With no ``--preset``, ``--run-dir`` or ``--checkpoint`` it uses the shipped
model. The same as ``moss-evaluate --input INPUT --output OUT``::

    moss-derain rainy.jpg --output derained.png
    moss-derain my_photos/ --output derained/ --preset path/to/my_preset
"""

from __future__ import annotations

import sys

from moss_tf.commands import evaluate


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--input", argv[0], *argv[1:]]
    if not any(a in ("-h", "--help") for a in argv) and "--input" not in argv:
        print("usage: moss-derain INPUT --output OUT [options of moss-evaluate --input]")
        print("error: name a photo or a folder of photos to derain", file=sys.stderr)
        return 2
    return evaluate.main(argv)


if __name__ == "__main__":
    sys.exit(main())
