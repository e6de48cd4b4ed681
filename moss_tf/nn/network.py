"""MOSSNet: the MOSS deraining network (docs/method.md §1, supplementary Tables 1-2).

head -> encoder (stages f0..f4) -> memory (Eq. 3 update, Eq. 5 read) ->
decoder with CBN fusion of the encoder features -> ``head - decoder`` skip ->
conv3x3 -> tanh.

The network is pure: it knows nothing of losses, optimizers or EMA targets
(see :mod:`moss_tf.train.trainer`). It is called on rainy images in [-1, 1] and
returns derained images in [-1, 1].
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from moss_tf.errors import CheckpointError
from moss_tf.nn.defaults import network_defaults
from moss_tf.nn.layers import PACKAGE, CBNFusion, MemoryBank, ResidualBlock
from moss_tf.nn.presets import read_preset


@keras.saving.register_keras_serializable(package=PACKAGE)
class MOSSNet(keras.Model):
    """The MOSS network. Defaults give the released model.

    Call it on float32 NHWC images in [-1, 1] (``pixels / 127.5 - 1``) of any
    height and width: sides that are not multiples of
    ``2 ** num_resampling_stages`` are padded by reflection and the output is
    cropped back. Returns images in [-1, 1] of the same shape.

    The defaults hold 2,855,939 numbers: 2,806,787 trainable and 49,152
    memory items (512 x 96, non-trainable), as the released network; the
    moving statistics of the four batch norms (448 numbers) come on top.

    Args:
        base_channels: channels of the head, ``ngf``. Default 16.
        channel_step: channels added per encoder stage, ``delta``. Default 16.
        num_stages: encoder and decoder stages, ``num_blocks``. Default 5.
        num_resampling_stages: stages that halve (encoder) or double
            (decoder) the resolution, ``num_scales``. Default 3.
        blocks_per_stage: residual blocks per stage, ``num_layers``. Default 4.
        memory_items: memory items K, ``kdim``. Default 512.
        memory_decay: memory EMA decay tau in [0, 1],
            ``moving_average_rate``. Default 0.999.
        use_memory: read the memory; False gives the "w/o Memory" ablation
            (``z_hat = z``). Default True.
        use_skip: subtract the decoder output from the head output; False
            gives the "w/o Skip-Connect" ablation. Default True.
        gate_keep_probability: keep probability of the CBN gate's Bernoulli
            mask in training, in (0, 1]. Default 0.8.
        inference_memory: the memory's Eq. (3) update at inference
            (``training=False``; training always updates from the whole batch
            and stores the result): ``"per_image"`` (default) updates from
            each image alone, so an image's output does not depend on its
            batch (the released network run one image at a time);
            ``"batch"`` updates from the whole batch, as the released network
            computes it; ``"frozen"`` reads the stored memory without update.

    Attributes:
        recompute: when True (set by training with ``train.recompute``), the
            residual stages keep only their inputs for the backward pass and
            recompute their activations there, block by block
            (``tf.recompute_grad`` at two levels): the same gradients for a
            fraction of the activation memory, at the cost of two more
            forward passes through the stages.

    Example:
        >>> net = MOSSNet(base_channels=8, channel_step=8, blocks_per_stage=1, memory_items=16)
        >>> net(keras.ops.zeros((1, 30, 41, 3))).shape
        TensorShape([1, 30, 41, 3])
    """

    def __init__(
        self,
        base_channels=16,
        channel_step=16,
        num_stages=5,
        num_resampling_stages=3,
        blocks_per_stage=4,
        memory_items=512,
        memory_decay=0.999,
        use_memory=True,
        use_skip=True,
        gate_keep_probability=0.8,
        inference_memory="per_image",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0 <= num_resampling_stages <= num_stages:
            raise ValueError(
                f"num_resampling_stages={num_resampling_stages} must be in [0, {num_stages}]"
            )
        self.base_channels = base_channels
        self.channel_step = channel_step
        self.num_stages = num_stages
        self.num_resampling_stages = num_resampling_stages
        self.blocks_per_stage = blocks_per_stage
        self.memory_items = memory_items
        self.memory_decay = memory_decay
        self.use_memory = use_memory
        self.use_skip = use_skip
        self.gate_keep_probability = gate_keep_probability
        self.inference_memory = inference_memory
        # Training memory switch, not part of the architecture (not in get_config).
        self.recompute = False

        self.head = keras.layers.Conv2D(base_channels, 3, padding="same", use_bias=False)
        self.encoder_stages = []
        channels = base_channels
        for i in range(num_stages):
            self.encoder_stages.append(
                self._stage(channels, channels + channel_step, downsample=i < num_resampling_stages)
            )
            channels += channel_step
        self.memory = MemoryBank(memory_items, memory_decay, inference_memory, name="memory")
        self.decoder_stages = []
        self.fusions = []
        first_upsampling_stage = num_stages - num_resampling_stages
        for i in range(num_stages):
            self.decoder_stages.append(
                self._stage(channels, channels - channel_step, upsample=i >= first_upsampling_stage)
            )
            channels -= channel_step
            if i < num_stages - 1:
                self.fusions.append(CBNFusion(channels, gate_keep_probability, name=f"fuse{i}"))
        self.tail = keras.layers.Conv2D(3, 3, padding="same", use_bias=True)

    def _stage(self, in_channels, out_channels, downsample=False, upsample=False):
        """One stage: a resampling block then ``blocks_per_stage - 1`` plain ones."""
        blocks = [
            ResidualBlock(in_channels, out_channels, downsample=downsample, upsample=upsample)
        ]
        blocks += [
            ResidualBlock(out_channels, out_channels) for _ in range(self.blocks_per_stage - 1)
        ]
        return blocks

    @classmethod
    def from_preset(cls, preset="moss_release", **overrides):
        """A trained network from a shipped preset (by name) or a preset folder (by path).

        ``overrides`` change constructor arguments that keep the weights' shapes,
        e.g. ``inference_memory="frozen"``. The presets: :mod:`moss_tf.nn.presets`.

        Raises:
            CheckpointError: no such preset, or weights that do not fit its config.
        """
        config, weights = read_preset(preset)
        network = cls(**{**config, **overrides})
        network.build()
        try:
            network.load_weights(weights)
        except (ValueError, OSError) as err:
            raise CheckpointError(f"{weights}: does not fit the preset's config ({err})") from None
        return network

    def with_inference_memory(self, mode):
        """This network if its ``inference_memory`` is ``mode``, else a copy in that mode.

        The copy has the same weights, memory and batch-norm statistics; only
        what inference does with the memory differs (see the class Args).
        """
        if mode == self.inference_memory:
            return self
        copy = MOSSNet.from_config({**self.get_config(), "inference_memory": mode})
        copy.build()
        copy.set_weights(self.get_weights())
        return copy

    @property
    def size_multiple(self):
        """Height and width are padded to a multiple of this inside the network."""
        return 2**self.num_resampling_stages

    def build(self, input_shape=None):
        # Run once on a small symbolic-free input so every weight exists
        # (needed before loading weights into a freshly constructed model).
        side = self.size_multiple
        self.call(ops.zeros((1, side, side, 3)), training=False)
        self.built = True

    def pad(self, images):
        """Reflect-pad the bottom and right of ``images`` to multiples of :attr:`size_multiple`."""
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        multiple = self.size_multiple
        pad_h = (multiple - height % multiple) % multiple
        pad_w = (multiple - width % multiple) % multiple
        return ops.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="reflect")

    def encode(self, x):
        """Head and encoder: ``(head, features)``; ``features[-1]`` is z, the memory's input.

        ``x``: images in [-1, 1] whose sides are multiples of :attr:`size_multiple`.
        """
        head = self.head(x)
        h = head
        features = []
        for stage in self.encoder_stages:
            h = self._run_stage(stage, h)
            features.append(h)
        return head, features

    def _run_stage(self, blocks, h):
        """The residual blocks of one stage; see :attr:`recompute`."""

        def run(x, wrap=lambda block: block):
            for block in blocks:
                x = wrap(block)(x)
            return x

        if not self.recompute:
            return run(h)
        # Two levels: the stage keeps only its input for the backward pass;
        # there its blocks run again, each keeping only its own input, and
        # each block runs once more in its own backward pass, so one block's
        # activations are the most alive at once. The blocks are pure (no
        # state changes, no randomness), so every run gives the same values;
        # the memory and the batch norms stay outside and update once a step.
        return tf.recompute_grad(lambda x: run(x, wrap=tf.recompute_grad))(h)

    def decode(self, head, features, z_hat, training=False):
        """Decoder with CBN fusion, skip and tail: images in [-1, 1] at the padded size."""
        h = z_hat
        for i, stage in enumerate(self.decoder_stages):
            h = self._run_stage(stage, h)
            if i < len(self.fusions):
                h = self.fusions[i](features[self.num_stages - 2 - i], h, training=training)
        g = head - h if self.use_skip else h
        return ops.tanh(ops.cast(self.tail(g), "float32"))

    def call(self, images, training=False):
        return self.call_with_features(images, training)[0]

    def call_with_features(self, images, training=False):
        """``(output, features)``: the output and the encoder stage outputs f0..f4.

        Training uses the features to hold their scale (see
        :func:`moss_tf.nn.losses.feature_scale_penalty`); the output is ``call``'s.
        """

        def memory(z):
            return self.memory(z, training=training)

        return self._forward(images, memory, training)

    def call_with_memory(self, images, items):
        """Inference that reads ``items`` (float32 ``[G, K, C]``) instead of updating the memory.

        G = 1: all images read the same items; G = B: image b reads ``items[b]``.
        Tiled inference uses it to give every tile of a photo the photo's
        update (:meth:`MemoryBank.items_from_statistics`). Images in [-1, 1].
        """

        def memory(z):
            return self.memory.read_features(z, items)

        return self._forward(images, memory, training=False)[0]

    def _forward(self, images, memory, training):
        """pad -> encode -> ``memory(z)`` (unless ``use_memory`` is off) -> decode -> crop.

        Returns ``(output, features)``, the encoder stage outputs at the padded size.
        """
        head, features = self.encode(self.pad(images))
        z = features[-1]
        z_hat = memory(z) if self.use_memory else z
        y = self.decode(head, features, z_hat, training=training)
        return y[:, : ops.shape(images)[1], : ops.shape(images)[2], :], features

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({key: getattr(self, key) for key in network_defaults()})
        return config
