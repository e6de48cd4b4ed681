"""moss-tf: MOSS (CVPR 2021) semi-supervised image deraining in Keras 3 / TensorFlow.

::

    from moss_tf import Derainer
    clean = Derainer.from_preset("moss_release").derain("rainy.jpg")  # uint8 [H, W, 3]

The names below import TensorFlow on first use, not with the package, so the
command lines can check their arguments first.
"""

import importlib
import os

# TensorFlow's oneDNN CPU kernels are on by default only on x86 CPUs with
# AVX-512 VNNI, BF16 or AMX; elsewhere its convolution gradients run on the
# much slower Eigen kernels. With oneDNN a training step of the released
# network is about 1.9x faster on a 2-core AVX-512 Xeon (docs/benchmarks.md).
# TensorFlow reads this when it starts, so it is set before any moss_tf
# module imports it; TF_ENABLE_ONEDNN_OPTS=0 in the environment keeps it off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

_LAZY = {
    "Derainer": "moss_tf.infer.derain",
    "MOSSNet": "moss_tf.nn.network",
    "preset_names": "moss_tf.nn.presets",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Derainer", "MOSSNet", "__version__", "preset_names"]
