"""MOSSNet: the MOSS deraining network (SPEC.md §1, supplementary Tables 1-2).

head -> encoder (stages f0..f4) -> memory (Eq. 3 update, Eq. 5 read) ->
decoder with CBN fusion of the encoder features -> ``head - decoder`` skip ->
conv3x3 -> tanh.

The network is pure: it knows nothing of losses, optimizers or EMA targets
(see :mod:`moss_tf.trainer`). It is called on rainy images in [-1, 1] and
returns derained images in [-1, 1].
"""

from __future__ import annotations

import keras
from keras import ops

from moss_tf.layers import PACKAGE, CBNFusion, MemoryBank, ResidualBlock


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

        self.head = keras.layers.Conv2D(base_channels, 3, padding="same", use_bias=False)
        self.encoder_stages = []
        channels = base_channels
        for i in range(num_stages):
            self.encoder_stages.append(
                self._stage(channels, channels + channel_step, downsample=i < num_resampling_stages)
            )
            channels += channel_step
        self.memory = MemoryBank(memory_items, memory_decay, name="memory")
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

    def call(self, images, training=False):
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        multiple = self.size_multiple
        pad_h = (multiple - height % multiple) % multiple
        pad_w = (multiple - width % multiple) % multiple
        x = ops.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="reflect")

        head = self.head(x)
        h = head
        features = []
        for stage in self.encoder_stages:
            for block in stage:
                h = block(h)
            features.append(h)
        if self.use_memory:
            h = self.memory(h, training=training)
        for i, stage in enumerate(self.decoder_stages):
            for block in stage:
                h = block(h)
            if i < len(self.fusions):
                h = self.fusions[i](features[self.num_stages - 2 - i], h, training=training)
        g = head - h if self.use_skip else h
        y = ops.tanh(ops.cast(self.tail(g), "float32"))
        return y[:, :height, :width, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            base_channels=self.base_channels,
            channel_step=self.channel_step,
            num_stages=self.num_stages,
            num_resampling_stages=self.num_resampling_stages,
            blocks_per_stage=self.blocks_per_stage,
            memory_items=self.memory_items,
            memory_decay=self.memory_decay,
            use_memory=self.use_memory,
            use_skip=self.use_skip,
            gate_keep_probability=self.gate_keep_probability,
        )
        return config
