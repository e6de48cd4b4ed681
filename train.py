"""``python train.py``: the same command as ``moss-train`` (:mod:`moss_tf.commands.train`)."""

import sys

from moss_tf.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
