"""moss-tf: MOSS (CVPR 2021) semi-supervised image deraining in Keras 3 / TensorFlow."""

__version__ = "0.1.0"
