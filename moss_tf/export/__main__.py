"""``python -m moss_tf.export``: the same command as ``moss-export``."""

import sys

from moss_tf.commands.export import main

sys.exit(main())
