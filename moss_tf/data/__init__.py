"""Data: folder layouts, image decoding, rain synthesis and tf.data pipelines.

Public entry points (all images leave in the model range [-1, 1] unless said):

* :func:`build_training_data` - infinite labeled / unlabeled crop streams;
* :func:`build_test_sets` - named, finite test splits;
* :func:`read_image`, :func:`list_images` - decoding files (uint8 [0, 255]);
* :func:`to_model_range`, :func:`from_model_range` - the range conversions;
* :class:`DataConfig` - the ``data:`` config section.

The config classes and errors import at once; the rest is imported on first
use, because it imports TensorFlow and reading a config must not (the command
lines report a bad config in well under a second).
"""

import importlib

from moss_tf.data.data_config import DataConfig, LabeledConfig, RainConfig, UnlabeledConfig
from moss_tf.errors import DataError, ImageError

_LAZY = {
    "list_images": "moss_tf.data.images",
    "read_image": "moss_tf.data.images",
    "TrainingData": "moss_tf.data.pipeline",
    "build_test_sets": "moss_tf.data.pipeline",
    "build_training_data": "moss_tf.data.pipeline",
    "RainSynthesizer": "moss_tf.data.rain",
    "from_model_range": "moss_tf.data.ranges",
    "to_model_range": "moss_tf.data.ranges",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DataConfig",
    "DataError",
    "ImageError",
    "LabeledConfig",
    "RainConfig",
    "RainSynthesizer",
    "TrainingData",
    "UnlabeledConfig",
    "build_test_sets",
    "build_training_data",
    "from_model_range",
    "list_images",
    "read_image",
    "to_model_range",
]
