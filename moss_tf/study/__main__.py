"""``python -m moss_tf.study``: the same command as ``moss-study``."""

import sys

from moss_tf.commands.study import main

sys.exit(main())
