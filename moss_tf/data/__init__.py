"""Data: folder layouts, image decoding, rain synthesis and tf.data pipelines.

Public entry points (all images leave in the model range [-1, 1] unless said):

* :func:`build_training_data` - infinite labeled / unlabeled crop streams;
* :func:`build_test_sets` - named, finite test splits;
* :func:`read_image`, :func:`list_images` - decoding files (uint8 [0, 255]);
* :func:`to_model_range`, :func:`from_model_range` - the range conversions;
* :class:`DataConfig` - the ``data:`` config section.
"""

from moss_tf.data.config import DataConfig, LabeledConfig, RainConfig, UnlabeledConfig
from moss_tf.data.errors import DataError, ImageError
from moss_tf.data.images import list_images, read_image
from moss_tf.data.pipeline import TrainingData, build_test_sets, build_training_data
from moss_tf.data.rain import RainSynthesizer
from moss_tf.data.ranges import from_model_range, to_model_range

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
