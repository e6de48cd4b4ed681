"""``python evaluate.py``: the same command as ``moss-evaluate`` (moss_tf.commands.evaluate)."""

import sys

from moss_tf.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
