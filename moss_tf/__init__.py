"""moss-tf: MOSS (CVPR 2021) semi-supervised image deraining in Keras 3 / TensorFlow."""

import os

# TensorFlow's oneDNN CPU kernels are on by default only on x86 CPUs with
# AVX-512 VNNI, BF16 or AMX; elsewhere its convolution gradients run on the
# much slower Eigen kernels. With oneDNN a training step of the released
# network is about 1.9x faster on a 2-core AVX-512 Xeon (README, Benchmarks).
# TensorFlow reads this when it starts, so it is set before any moss_tf
# module imports it; TF_ENABLE_ONEDNN_OPTS=0 in the environment keeps it off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
