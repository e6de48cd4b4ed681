"""The building blocks of the MOSS network (docs/method.md §1).

- :class:`ResidualBlock`: conv3x3 -> LeakyReLU(0.02) -> conv3x3 plus a 1x1
  shortcut, with optional bilinear x2 upsampling first or 2x2 average pooling
  after the sum.
- :class:`MemoryBank`: the rain memory, Eq. (3) self-supervised EMA update and
  Eq. (5) soft-attentive read. Its items are non-trainable weights.
- :class:`CBNFusion`: fuses an encoder feature (the input) with a decoder
  feature (the condition) by conditional batch normalisation and a learned gate.

Values inside the network are features, not images: no range applies.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from moss_tf.nn.defaults import MEMORY_MODES

PACKAGE = "moss"

# PyTorch defaults of the released network (docs/method.md §1).
_NORMALIZE_EPS = 1e-12
_COUNT_EPS = 1e-6
_BN_EPS = 1e-5
_BN_MOMENTUM = 0.1  # PyTorch convention: new = (1 - m) * old + m * batch


def _replica_context():
    """The replica context when running inside ``strategy.run`` on >1 replicas."""
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        return ctx
    return None


def _global_sum(*tensors):
    """Sum tensors over all replicas of a ``tf.distribute`` strategy (identity otherwise).

    The tensors travel as one flat vector: one collective per call, issued in
    the same order on every replica.
    """
    ctx = _replica_context()
    if ctx is None:
        return tensors
    flat = tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1]) for t in tensors], axis=0)
    flat = ctx.all_reduce(tf.distribute.ReduceOp.SUM, flat)
    sizes = [tf.size(t) for t in tensors]
    parts = tf.split(flat, tf.stack(sizes), axis=0)
    return tuple(tf.reshape(part, tf.shape(t)) for part, t in zip(parts, tensors, strict=True))


def _l2_normalize(x, axis=-1):
    """``x / max(|x|, 1e-12)``, as PyTorch's ``F.normalize``."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    return x / ops.maximum(norm, _NORMALIZE_EPS)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(keras.layers.Layer):
    """Residual block ``(in_channels, out_channels, downsample, upsample)``.

    ``mid = max(in_channels, out_channels)``;
    ``y = conv3x3(in->mid) -> LeakyReLU(0.02) -> conv3x3(mid->out)`` (no biases);
    shortcut ``conv1x1(in->out)`` without bias when the channel counts differ.
    With ``upsample`` the input is first resized x2 (bilinear, half-pixel
    centres); with ``downsample`` the sum is average-pooled 2x2 afterwards.

    Args:
        in_channels: channels of the input feature.
        out_channels: channels of the output feature.
        downsample: halve height and width after the sum. Default False.
        upsample: double height and width before the convolutions. Default False.

    Example:
        >>> block = ResidualBlock(16, 32, downsample=True)
        >>> block(keras.ops.zeros((1, 8, 8, 16))).shape
        (1, 4, 4, 32)
    """

    def __init__(self, in_channels, out_channels, downsample=False, upsample=False, **kwargs):
        super().__init__(**kwargs)
        if downsample and upsample:
            raise ValueError("a ResidualBlock cannot both downsample and upsample")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.downsample = downsample
        self.upsample = upsample
        mid = max(in_channels, out_channels)
        conv = keras.layers.Conv2D
        self.conv1 = conv(mid, 3, padding="same", use_bias=False, name="conv1")
        self.activation = keras.layers.LeakyReLU(negative_slope=0.02)
        self.conv2 = conv(out_channels, 3, padding="same", use_bias=False, name="conv2")
        self.shortcut = (
            conv(out_channels, 1, use_bias=False, name="shortcut")
            if in_channels != out_channels
            else None
        )
        self.pool = keras.layers.AveragePooling2D(2) if downsample else None

    def build(self, input_shape):
        shape = list(input_shape)
        if self.upsample:
            shape = [shape[0], None, None, shape[3]]
        self.conv1.build(shape)
        self.conv2.build([*shape[:3], max(self.in_channels, self.out_channels)])
        if self.shortcut is not None:
            self.shortcut.build(shape)

    def call(self, x):
        if self.upsample:
            # tf.image.resize handles unknown spatial sizes (one serving graph
            # for every image size); half-pixel centres, as PyTorch's
            # interpolate(..., align_corners=False).
            size = tf.shape(x)[1:3] * 2
            x = tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)
        y = self.conv2(self.activation(self.conv1(x)))
        out = y + (self.shortcut(x) if self.shortcut is not None else x)
        if self.pool is not None:
            out = self.pool(out)
        return out

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if self.upsample:
            height = None if height is None else 2 * height
            width = None if width is None else 2 * width
        if self.downsample:
            height = None if height is None else height // 2
            width = None if width is None else width // 2
        return (batch, height, width, self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            downsample=self.downsample,
            upsample=self.upsample,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MemoryBank(keras.layers.Layer):
    """Rain memory ``M`` of ``num_items`` items, Eq. (3) update and Eq. (5) read.

    For a group of feature vectors ``z_n``:

    1. scores ``s_nk = <z_n/|z_n|, m_k/|m_k|>``;
    2. Eq. (3): each vector picks its best item ``a_n = argmax_k s_nk``; the
       item's new value is ``decay * m_k + (1 - decay) * mean_k`` where
       ``mean_k`` is the mean of the group's vectors that picked it (0 if none
       did); ``z`` is held constant for this update;
    3. scores are recomputed with the updated memory, and Eq. (5) reads
       ``z_hat_n = sum_k softmax_k(s_nk) * m_k`` with the memory held constant,
       so gradients reach the encoder only through the scores.

    What a group is:

    - ``training=True``: the whole batch (under ``tf.distribute`` the global
      batch: the per-item sums and counts are all-reduced, so every replica
      holds the same memory), and the updated memory is stored. This is the
      released network's training.
    - ``training=False``, by ``inference_memory`` (nothing is stored):

      - ``"per_image"`` (default): each image alone, with its own updated
        memory; an image's output does not depend on the rest of its batch.
        This is the released network evaluated one image at a time, as its
        authors did.
      - ``"batch"``: the whole batch, as the released network computes it
        (its ``output_eval_batch`` test vector); images influence each other.
      - ``"frozen"``: no update; every vector reads the stored memory.

    The parts of the call are public for tiled inference: per-image
    :meth:`assignment_statistics` add up over the tiles of a photo,
    :meth:`items_from_statistics` turns the totals into the photo's updated
    memory and :meth:`read` reads with it.

    Args:
        num_items: number of memory items K. Default 512.
        decay: EMA decay tau in [0, 1]; 0 copies the group means in, 1 freezes
            the memory. Default 0.999.
        inference_memory: ``"per_image"``, ``"batch"`` or ``"frozen"``: the
            update at inference (above). Default ``"per_image"``.

    Example:
        >>> memory = MemoryBank(num_items=8)
        >>> memory(keras.ops.ones((2, 4, 4, 16)), training=True).shape
        (2, 4, 4, 16)
    """

    def __init__(self, num_items=512, decay=0.999, inference_memory="per_image", **kwargs):
        super().__init__(**kwargs)
        if inference_memory not in MEMORY_MODES:
            raise ValueError(
                f"inference_memory must be one of {MEMORY_MODES}, got {inference_memory!r}"
            )
        self.num_items = num_items
        self.decay = decay
        self.inference_memory = inference_memory

    def build(self, input_shape):
        self.items = self.add_weight(
            shape=(self.num_items, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(0.0, 1.0),
            trainable=False,
            autocast=False,
            # Every replica computes the same update from all-reduced statistics.
            aggregation="only_first_replica",
            name="items",
        )

    @property
    def updates_at_inference(self):
        """Whether an inference call changes the memory it reads (Eq. 3) before reading."""
        return self.inference_memory != "frozen" and self.decay != 1.0

    def assignment_statistics(self, vectors):
        """Per-group Eq. (3) sums and counts of the vectors that chose each item.

        Args:
            vectors: float32 ``[G, N, C]``, G groups of N feature vectors.

        Returns:
            ``(sums [G, K, C], counts [G, K])``, float32, no gradient. Both add
            up over disjoint parts of a group (tiles, replicas).
        """
        vectors = ops.stop_gradient(vectors)
        items = _l2_normalize(ops.convert_to_tensor(self.items))
        scores = ops.einsum("gnc,kc->gnk", _l2_normalize(vectors), items)
        choice = ops.one_hot(ops.argmax(scores, axis=-1), self.num_items, dtype=vectors.dtype)
        sums = ops.einsum("gnk,gnc->gkc", choice, vectors)
        counts = ops.sum(choice, axis=1)
        return sums, counts

    def items_from_statistics(self, sums, counts):
        """Eq. (3): the updated memory ``[G, K, C]`` of each group from its sums and counts."""
        means = sums / (counts[..., None] + _COUNT_EPS)
        return self.decay * ops.convert_to_tensor(self.items) + (1.0 - self.decay) * means

    def read(self, vectors, items):
        """Eq. (5): ``[G, N, C]`` soft-attentive reads of ``vectors`` from ``items`` ``[G, K, C]``.

        The memory gets no gradient.
        """
        items = ops.stop_gradient(items)
        scores = ops.einsum("gnc,gkc->gnk", _l2_normalize(vectors), _l2_normalize(items))
        return ops.einsum("gnk,gkc->gnc", ops.softmax(scores, axis=-1), items)

    def read_features(self, z, items):
        """Eq. (5) on feature maps ``z`` ``[B, H, W, C]`` from ``items`` ``[G, K, C]``.

        G = 1: every image reads the same items; G = B: image b reads ``items[b]``.
        """
        shape = ops.shape(z)
        vectors = ops.reshape(ops.cast(z, "float32"), (ops.shape(items)[0], -1, shape[-1]))
        return ops.cast(ops.reshape(self.read(vectors, items), shape), z.dtype)

    def call(self, z, training=False):
        mode = "batch" if training else self.inference_memory
        if mode == "frozen" or self.decay == 1.0:
            return self.read_features(z, ops.convert_to_tensor(self.items)[None])
        shape = ops.shape(z)
        groups = shape[0] if mode == "per_image" else 1
        vectors = ops.reshape(ops.cast(z, "float32"), (groups, -1, shape[-1]))
        sums, counts = self.assignment_statistics(vectors)
        if mode == "batch":
            sums, counts = _global_sum(sums, counts)
        items = self.items_from_statistics(sums, counts)
        if training:
            self.items.assign(items[0])
        return self.read_features(z, items)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_items=self.num_items, decay=self.decay, inference_memory=self.inference_memory
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class CBNFusion(keras.layers.Layer):
    """Conditional batch-norm fusion of an encoder feature ``f`` and decoder feature ``g``.

    ``f_bar = BatchNorm(f)`` without scale and offset (batch statistics in
    training, moving statistics at inference; PyTorch's eps 1e-5, momentum
    0.1, and unbiased batch variance for the moving variance), then::

        out0  = f_bar * (1 + conv1x1_gamma(g)) + conv1x1_beta(g)   # conditional
        out1  = f_bar * (1 + a_gamma) + a_beta                      # unconditional
        alpha = sigmoid(conv1x1_alpha(f_bar))                       # 1 channel
        out   = (1 - alpha) * out0 + alpha * out1

    In training ``alpha`` is multiplied by a per-sample Bernoulli mask with
    keep probability ``gate_keep_probability``. Under ``tf.distribute`` the
    batch statistics are those of the global batch.

    Args:
        channels: channels of ``f`` (and of the output).
        gate_keep_probability: Bernoulli keep probability of the gate in
            training, in (0, 1]. Default 0.8.
        seed: seed of the gate mask. Default None.

    Example:
        >>> fuse = CBNFusion(16)
        >>> fuse(keras.ops.ones((2, 4, 4, 16)), keras.ops.ones((2, 4, 4, 24))).shape
        (2, 4, 4, 16)
    """

    def __init__(self, channels, gate_keep_probability=0.8, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.gate_keep_probability = gate_keep_probability
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        conv = keras.layers.Conv2D
        self.gamma = conv(channels, 1, use_bias=False, kernel_initializer="zeros", name="gamma")
        self.beta = conv(channels, 1, use_bias=False, kernel_initializer="zeros", name="beta")
        self.alpha = conv(1, 1, use_bias=False, name="alpha")

    def build(self, f_shape, g_shape):
        channels = self.channels
        self.affine_gamma = self.add_weight(shape=(channels,), initializer="zeros", name="a_gamma")
        self.affine_beta = self.add_weight(shape=(channels,), initializer="zeros", name="a_beta")
        stat = {"trainable": False, "autocast": False, "aggregation": "only_first_replica"}
        self.moving_mean = self.add_weight(
            shape=(channels,), initializer="zeros", name="moving_mean", **stat
        )
        self.moving_variance = self.add_weight(
            shape=(channels,), initializer="ones", name="moving_variance", **stat
        )
        self.gamma.build(g_shape)
        self.beta.build(g_shape)
        self.alpha.build(f_shape)

    def _normalize(self, f, training):
        f32 = ops.cast(f, "float32")
        if not training:
            mean, variance = self.moving_mean, self.moving_variance
        else:
            # Two passes (mean, then squared deviations) keep float32 exact
            # enough to match PyTorch to 1e-5; both sums span the global batch.
            count = ops.cast(ops.prod(ops.shape(f32)[:3]), "float32")
            total, count = _global_sum(ops.sum(f32, axis=(0, 1, 2)), count)
            mean = total / count
            (squares,) = _global_sum(ops.sum(ops.square(f32 - mean), axis=(0, 1, 2)))
            variance = squares / count
            unbiased = variance * count / ops.maximum(count - 1.0, 1.0)
            self.moving_mean.assign((1 - _BN_MOMENTUM) * self.moving_mean + _BN_MOMENTUM * mean)
            self.moving_variance.assign(
                (1 - _BN_MOMENTUM) * self.moving_variance + _BN_MOMENTUM * unbiased
            )
        normalized = (f32 - mean) * ops.rsqrt(variance + _BN_EPS)
        return ops.cast(normalized, f.dtype)

    def call(self, f, g, training=False):
        f_bar = self._normalize(f, training)
        conditional = f_bar * (1.0 + self.gamma(g)) + self.beta(g)
        unconditional = f_bar * (1.0 + self.affine_gamma) + self.affine_beta
        gate = ops.sigmoid(self.alpha(f_bar))
        if training and self.gate_keep_probability < 1.0:
            batch = ops.shape(f)[0]
            draw = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator)
            gate = gate * ops.cast(draw < self.gate_keep_probability, gate.dtype)
        return (1.0 - gate) * conditional + gate * unconditional

    def compute_output_shape(self, f_shape, g_shape):
        return f_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=self.channels,
            gate_keep_probability=self.gate_keep_probability,
            seed=self.seed,
        )
        return config
