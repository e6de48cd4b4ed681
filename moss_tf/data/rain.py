"""Rain synthesis as TensorFlow ops, usable inside tf.data map functions.

Two kinds of rain, combined by :class:`RainSynthesizer`:

* procedural streaks, needing no files: sparse random seeds, each drawn out
  into a streak by a line kernel (a motion blur of a given length, width and
  angle), with brightness per streak;
* streak-layer images (white streaks on black, e.g. Garg & Nayar's), placed
  with a random position, scale and rotation and a brightness factor.

An optional haze (a bright veil) and an optional veil from the atmospheric
scattering model (``I = B t + A (1 - t)``, transmission varying down the
image) are blended in first, then the rain layer, optionally blurred, is
added by a screen or additive blend; a share of the images can be left
clean. Every random choice comes from stateless ops keyed by an explicit
seed, so the same seed gives the same rain whatever the thread count or
order of tf.data's parallel map.

All images here are float32 in [0, 1]; the pipeline converts to [-1, 1] at
the model boundary.
"""

from __future__ import annotations

import math

import tensorflow as tf

from moss_tf.data.data_config import RainConfig
from moss_tf.data.pool import ImagePool

__all__ = [
    "RainSynthesizer",
    "accumulation_transmission",
    "depth_layers",
    "procedural_streaks",
    "streak_density",
    "streak_layer_rain",
]

# Brightness of the haze veil, drawn per image: rain haze is a light grey.
_HAZE_LIGHT = (0.8, 0.95)


def _uniform(seed: tf.Tensor, bounds, shape=()) -> tf.Tensor:
    low, high = float(bounds[0]), float(bounds[1])
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def _warp(
    image: tf.Tensor,
    out_height: tf.Tensor,
    out_width: tf.Tensor,
    angle: tf.Tensor,
    scale: tf.Tensor | float,
    center: tf.Tensor,
    fill_mode: str,
    interpolation: str = "BILINEAR",
) -> tf.Tensor:
    """Resample ``image`` [h, w, 1] onto an [H, W] grid, rotated by ``angle``.

    Output pixel p reads input ``center + R(angle) (p - out_center) / scale``
    (``interpolation``: BILINEAR or NEAREST): a vertical input line leans
    right (top to the right) for a positive angle. ``center`` is (x, y) in
    input pixels.
    """
    out_cx = (tf.cast(out_width, tf.float32) - 1.0) / 2.0
    out_cy = (tf.cast(out_height, tf.float32) - 1.0) / 2.0
    cos = tf.cos(angle) / scale
    sin = tf.sin(angle) / scale
    # x_in = cx + cos dx + sin dy, y_in = cy - sin dx + cos dy. Rows grow
    # downwards, so a vertical input line shows up as "/" for a positive angle.
    a0, a1 = cos, sin
    b0, b1 = -sin, cos
    transform = tf.stack(
        [
            a0,
            a1,
            center[0] - a0 * out_cx - a1 * out_cy,
            b0,
            b1,
            center[1] - b0 * out_cx - b1 * out_cy,
            0.0,
            0.0,
        ]
    )
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=tf.stack([out_height, out_width]),
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode=fill_mode,
    )
    return warped[0]


def _log_uniform(seed: tf.Tensor, bounds) -> tf.Tensor:
    return tf.exp(_uniform(seed, (math.log(bounds[0]), math.log(bounds[1]))))


def _fold(seed: tf.Tensor, key: int) -> tf.Tensor:
    """A seed for choices added after the original ones, independent of them.

    Splitting the same seed into more parts would change the existing
    draws; folding in a fixed key leaves them as they were.
    """
    return tf.random.experimental.stateless_fold_in(seed, key)


def _gaussian_blur(layer: tf.Tensor, sigma: tf.Tensor, max_sigma: float) -> tf.Tensor:
    """``layer`` [H, W, 1] blurred by a separable Gaussian of std ``sigma`` (reflect padding)."""
    radius = max(1, math.ceil(3.0 * max_sigma))
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-tf.square(offsets) / (2.0 * tf.square(tf.maximum(sigma, 1e-3))))
    kernel = kernel / tf.reduce_sum(kernel)
    padded = tf.pad(layer[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    out = tf.nn.conv2d(padded, tf.reshape(kernel, [-1, 1, 1, 1]), 1, "VALID")
    out = tf.nn.conv2d(out, tf.reshape(kernel, [1, -1, 1, 1]), 1, "VALID")
    return out[0]


def streak_density(rain: RainConfig, seed: tf.Tensor):
    """The procedural-streak density of one image: ``rain.density``, or drawn
    log-uniformly from it when it is a [min, max] range (the draw
    ``procedural_streaks`` makes with the same ``seed``)."""
    if isinstance(rain.density, list):
        return _log_uniform(_fold(seed, 1), rain.density)
    return tf.constant(float(rain.density))


def procedural_streaks(
    height: tf.Tensor,
    width: tf.Tensor,
    rain: RainConfig,
    seed: tf.Tensor,
    angle: tf.Tensor | None = None,
    density: tf.Tensor | None = None,
) -> tf.Tensor:
    """A rain layer of procedural streaks, float32 ``[H, W, 1]`` in [0, 1].

    Seeds appear with probability ``rain.density`` per pixel with brightness
    drawn from ``rain.intensity``; each is stretched by a vertical line kernel
    (parabolic profile of ``rain.length`` pixels) and a Gaussian cross
    profile (``rain.width`` pixels at half maximum), on a square canvas large
    enough to cover [H, W] at any angle, which is then rotated by an angle from
    ``rain.angle`` (degrees from vertical, positive leans right). On a share
    ``rain.crisp_probability`` of the images the streaks are flat bars with
    hard edges instead, rotated by nearest neighbour. Length, width
    and angle are drawn once per call, as rain in one photo falls alike; so is
    the density when ``rain.density`` is a [min, max] range (log-uniformly).

    Args:
        height, width: output size in pixels (scalars, may be dynamic).
        rain: parameters; the kernel sizes come from its maxima (static).
        seed: int32/int64 shape [2] stateless seed.
        angle: radians, to use instead of drawing one from ``rain.angle``.
        density: the image's density, to use instead of ``streak_density(rain, seed)``.
    """
    seeds = tf.random.experimental.stateless_split(seed, 5)
    if angle is None:
        angle = _uniform(seeds[0], rain.angle) * (math.pi / 180.0)
    if density is None:
        density = streak_density(rain, seed)
    length = _uniform(seeds[1], rain.length)
    thickness = _uniform(seeds[2], rain.width)
    sizes = (_taps(rain.length[1], rain.width[1]), length, thickness)
    crisp = None
    if rain.crisp_probability > 0:
        crisp = tf.random.stateless_uniform([], _fold(seed, 6)) < rain.crisp_probability
    return _draw_streaks(
        height,
        width,
        sizes,
        angle,
        density,
        seeds[3],
        lambda shape: _uniform(seeds[4], rain.intensity, shape),
        crisp,
    )


def _taps(max_length: float, max_width: float) -> tuple[int, int]:
    """(along, across) kernel taps of streaks up to ``max_length`` long and ``max_width`` wide."""
    return 2 * math.ceil(max_length / 2) + 1, 2 * math.ceil(1.5 * max_width) + 1


def _draw_streaks(
    height, width, sizes, angle, density, starts_seed, brightness, crisp=None
) -> tf.Tensor:
    """Streaks of one length, width and angle from random starts: ``[H, W, 1]`` in [0, 1].

    ``sizes`` is ``((long_taps, cross_taps), length, thickness)``: the static
    kernel sizes (from the largest length and width) and this layer's values;
    ``brightness(shape)`` draws each start's brightness. Streaks are soft
    (tapered ends, a Gaussian cross profile, bilinear resampling) unless
    ``crisp`` (a boolean tensor) holds: then they are bars, flat along their
    length and across, with hard edges, resampled by nearest neighbour, so a
    one-pixel streak stays one pixel wide.
    """
    (long_taps, cross_taps), length, thickness = sizes
    steps = tf.range(long_taps, dtype=tf.float32) - long_taps // 2
    along = tf.clip_by_value(1.0 - tf.square(steps / (length / 2.0 + 0.5)), 0.0, 1.0)
    offsets = tf.range(cross_taps, dtype=tf.float32) - cross_taps // 2
    sigma = thickness / 2.3548  # width is the full width at half maximum
    across = tf.exp(-tf.square(offsets) / (2.0 * tf.square(sigma)))
    if crisp is not None:
        along = tf.where(crisp, _bar(steps, length), along)
        across = tf.where(crisp, _bar(offsets, thickness), across)

    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    diagonal = tf.sqrt(tf.cast(height * height + width * width, tf.float32))
    side = tf.cast(tf.math.ceil(diagonal), tf.int32) + 2
    # Extra margins so that streaks starting outside the canvas still reach into it.
    seed_shape = tf.stack([side + long_taps - 1, side + cross_taps - 1])
    starts = tf.random.stateless_uniform(seed_shape, seed=starts_seed) < density
    canvas = tf.where(starts, brightness(seed_shape), 0.0)[None, :, :, None]
    canvas = tf.nn.conv2d(canvas, tf.reshape(along, [long_taps, 1, 1, 1]), 1, "VALID")
    canvas = tf.nn.conv2d(canvas, tf.reshape(across, [1, cross_taps, 1, 1]), 1, "VALID")
    center = tf.stack([(tf.cast(side, tf.float32) - 1.0) / 2.0] * 2)

    def warp(interpolation):
        return _warp(canvas[0], height, width, angle, 1.0, center, "CONSTANT", interpolation)

    if crisp is None:
        layer = warp("BILINEAR")
    else:
        layer = tf.cond(crisp, lambda: warp("NEAREST"), lambda: warp("BILINEAR"))
    return tf.clip_by_value(layer, 0.0, 1.0)


def _bar(offsets: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """A flat profile ``size`` taps long centred on offset 0; each end tap holds what is left."""
    return tf.clip_by_value(size / 2.0 + 0.5 - tf.abs(offsets), 0.0, 1.0)


def streak_layer_rain(
    layers: ImagePool,
    height: tf.Tensor,
    width: tf.Tensor,
    rain: RainConfig,
    seed: tf.Tensor,
    base_angle: tf.Tensor | float = 0.0,
) -> tf.Tensor:
    """One streak-layer image placed on an [H, W] grid, float32 ``[H, W, 1]`` in [0, 1].

    A layer is picked at random from ``layers`` (uint8 ``[h, w, 1]``), centred
    at a random point, zoomed by ``rain.streak_scale``, rotated by
    ``rain.streak_rotation`` degrees (plus ``base_angle`` radians) and
    multiplied by ``rain.streak_intensity``.
    Areas beyond the layer's border are mirrored, so small layers still cover
    large images.
    """
    seeds = tf.random.experimental.stateless_split(seed, 5)
    index = tf.random.stateless_uniform([], seeds[0], 0, len(layers), dtype=tf.int32)
    layer = tf.cast(layers.get(index), tf.float32) / 255.0
    size = tf.cast(tf.shape(layer)[:2], tf.float32)
    center = tf.random.stateless_uniform([2], seeds[1]) * tf.stack([size[1] - 1.0, size[0] - 1.0])
    scale = _uniform(seeds[2], rain.streak_scale)
    angle = _uniform(seeds[3], rain.streak_rotation) * (math.pi / 180.0)
    if rain.shared_angle:
        angle = angle + base_angle
    placed = _warp(layer, height, width, angle, scale, center, "REFLECT")
    return tf.clip_by_value(placed * _uniform(seeds[4], rain.streak_intensity), 0.0, 1.0)


def depth_layers(
    height: tf.Tensor, width: tf.Tensor, rain: RainConfig, seed: tf.Tensor, angle: tf.Tensor
) -> tf.Tensor:
    """Streaks at several depths (``rain.depth_*``), screened together: ``[H, W, 1]`` in [0, 1].

    The number of layers is drawn from ``rain.depth_layers``; each layer's
    nearness u uniformly in [0, 1] sets its length, width, blur, brightness
    and density between the [far, near] pairs. All fall at ``angle`` (radians).
    """
    low, high = rain.depth_layers
    seeds = tf.random.experimental.stateless_split(seed, 2 + high)
    count = tf.random.stateless_uniform([], seeds[0], low, high + 1, dtype=tf.int32)
    exposure = _log_uniform(seeds[1], rain.depth_exposure)
    taps = _taps(max(rain.depth_length) * rain.depth_exposure[1], max(rain.depth_width))
    max_blur = max(rain.depth_blur)
    log_density = [math.log(d) for d in rain.depth_density]
    total = tf.zeros(tf.stack([height, width, 1]))
    for k in range(high):
        parts = tf.random.experimental.stateless_split(seeds[2 + k], 4)
        nearness = tf.random.stateless_uniform([], parts[0])

        def at(pair, u=nearness):
            return pair[0] + (pair[1] - pair[0]) * u

        peak = at(rain.depth_intensity)

        def brightness(shape, peak=peak, seed=parts[2]):
            return peak * tf.random.stateless_uniform(shape, seed, 0.5, 1.0)

        sizes = (taps, at(rain.depth_length) * exposure, at(rain.depth_width))
        density = tf.exp(at(log_density))
        layer = _draw_streaks(height, width, sizes, angle, density, parts[1], brightness)
        if max_blur > 0:
            layer = _gaussian_blur(layer, at(rain.depth_blur), max_blur)
        layer = tf.where(k < count, layer, 0.0)
        total = 1.0 - (1.0 - total) * (1.0 - layer)
    return total


def accumulation_transmission(
    rows: tf.Tensor, near: tf.Tensor, far: tf.Tensor, horizon: tf.Tensor
) -> tf.Tensor:
    """Transmission of rain accumulation at image ``rows`` (fractions of the height from the top).

    A ground plane seen level: distance ``∝ 1 / (row - horizon)`` below the
    horizon, so optical depth ``-ln t`` is ``-ln(near)`` at the bottom row
    (row 1) and grows towards the horizon; it is capped at ``-ln(far)``,
    which holds at and above the horizon.
    """
    thickest = -tf.math.log(far)
    below = tf.maximum(rows - horizon, 1e-6)
    depth = -tf.math.log(near) * (1.0 - horizon) / below
    depth = tf.where(rows > horizon, tf.minimum(depth, thickest), thickest)
    return tf.exp(-depth)


class RainSynthesizer:
    """Adds rain described by a :class:`RainConfig` to clean images.

    Args:
        rain: the rain parameters (presets already resolved).
        layers: streak-layer images (uint8 ``[h, w, 1]``) when ``rain.streaks``
            is set, else None.

    Example::

        rainy = RainSynthesizer(RainConfig(preset="heavy"))(clean, seed=[0, 7])
        # clean, rainy: float32 [H, W, 3] in [0, 1]
    """

    def __init__(self, rain: RainConfig, layers: ImagePool | None = None):
        if rain.streaks is not None and layers is None:
            raise ValueError("rain.streaks is set: pass the decoded streak layers")
        self.rain = rain
        self.layers = layers

    def __call__(self, clean: tf.Tensor, seed, rows=None) -> tf.Tensor:
        """Rainy version of ``clean`` float32 ``[H, W, 3]`` in [0, 1]; same range out.

        ``rows``: ``(first_row, photo_height)`` when ``clean`` is a crop of a
        larger photo, so rain that depends on the row (accumulation) follows
        the photo's rows; default: ``clean`` is the whole photo.
        """
        rain = self.rain
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        seeds = tf.random.experimental.stateless_split(seed, 4)
        height, width = tf.shape(clean)[0], tf.shape(clean)[1]

        # Choices added later come from seeds folded out of ``seed`` so the
        # earlier presets draw exactly what they drew before.
        extra = tf.random.experimental.stateless_split(_fold(seed, 2), 6)

        haze = _uniform(seeds[0], rain.haze)
        light = _uniform(seeds[1], _HAZE_LIGHT)
        image = clean * (1.0 - haze) + haze * light
        density = streak_density(rain, seeds[2])
        colour = None  # of the light the drops and the fog scatter
        if rain.light_tint > 0:
            colour = _light_colour(rain.light_tint, _fold(seed, 7))
        if rain.veil_probability > 0:
            image = self._veil(image, extra[0], density, colour)
        if rain.accumulation_probability > 0:
            image = self._accumulation(image, _fold(seed, 3), density, rows, colour)

        angle = None
        if rain.shared_angle:
            angle = _uniform(extra[1], rain.angle) * (math.pi / 180.0)
        streaks = tf.zeros(tf.stack([height, width, 1]))
        if _has_density(rain.density):
            streaks = procedural_streaks(height, width, rain, seeds[2], angle, density)
        if self.layers is not None:
            base = 0.0 if angle is None else angle
            layer = streak_layer_rain(self.layers, height, width, rain, seeds[3], base)
            streaks = 1.0 - (1.0 - streaks) * (1.0 - layer)  # screen the two layers
        if rain.blur[1] > 0:
            sigma = _uniform(extra[2], rain.blur)
            streaks = _gaussian_blur(streaks, sigma, rain.blur[1])
        if rain.depth_layers[1] > 0:
            if angle is None:  # the angle procedural_streaks drew (or would draw) for this image
                angle_seed = tf.random.experimental.stateless_split(seeds[2], 5)[0]
                angle = _uniform(angle_seed, rain.angle) * (math.pi / 180.0)
            layers = depth_layers(height, width, rain, _fold(seed, 4), angle)
            streaks = 1.0 - (1.0 - streaks) * (1.0 - layers)

        if colour is not None:
            streaks = streaks * colour
        if rain.blend == "add":
            rainy = tf.clip_by_value(image + streaks, 0.0, 1.0)
        else:
            rainy = 1.0 - (1.0 - image) * (1.0 - streaks)  # screen: stays in [0, 1]
        if rain.clean_probability > 0:
            keep_clean = tf.random.stateless_uniform([], extra[3]) < rain.clean_probability
            rainy = tf.where(keep_clean, clean, rainy)
        return rainy

    def _veil(self, image: tf.Tensor, seed: tf.Tensor, density, colour) -> tf.Tensor:
        """``I = B t + A (1 - t)`` with t lowest at the top row, on some images.

        Only images whose streak ``density`` reaches ``rain.veil_min_density``
        can get one: the veil is light scattered by dense rain.
        """
        rain = self.rain
        seeds = tf.random.experimental.stateless_split(seed, 5)
        veiled = tf.logical_and(
            tf.random.stateless_uniform([], seeds[0]) < rain.veil_probability,
            density >= rain.veil_min_density,
        )
        top = _uniform(seeds[1], rain.veil_transmission)
        fade = _uniform(seeds[2], rain.veil_gradient)
        rows = tf.linspace(0.0, 1.0, tf.shape(image)[0])[:, None, None]
        transmission = 1.0 - (1.0 - top) * (1.0 - fade * rows)
        transmission = tf.where(veiled, transmission, tf.ones_like(transmission))
        airlight = self._airlight(rain.airlight, seeds[3], seeds[4], colour)
        return image * transmission + airlight * (1.0 - transmission)

    def _accumulation(self, image: tf.Tensor, seed: tf.Tensor, density, rows, colour) -> tf.Tensor:
        """Rain accumulation thickening with distance (:func:`accumulation_transmission`)."""
        rain = self.rain
        seeds = tf.random.experimental.stateless_split(seed, 6)
        applied = tf.logical_and(
            tf.random.stateless_uniform([], seeds[0]) < rain.accumulation_probability,
            density >= rain.veil_min_density,
        )
        transmission = accumulation_transmission(
            _row_fractions(tf.shape(image)[0], rows),
            _uniform(seeds[1], rain.accumulation_near),
            _uniform(seeds[2], rain.accumulation_far),
            _uniform(seeds[3], rain.accumulation_horizon),
        )
        airlight = self._airlight(rain.accumulation_airlight, seeds[4], seeds[5], colour)
        veiled = image * transmission + airlight * (1.0 - transmission)
        return tf.where(applied, veiled, image)

    def _airlight(self, levels, level_seed, tint_seed, colour) -> tf.Tensor:
        """A fog's airlight ``[3]``: a grey level from ``levels``, each channel moved
        by up to ``rain.airlight_tint``, then in the light's ``colour`` (if any)."""
        spread = self.rain.airlight_tint
        tint = _uniform(tint_seed, (-spread, spread), [3])
        airlight = tf.clip_by_value(_uniform(level_seed, levels) + tint, 0.0, 1.0)
        return airlight if colour is None else airlight * colour


def _light_colour(tint: float, seed: tf.Tensor) -> tf.Tensor:
    """One image's colour of the light in the rain ``[3]``: each channel
    ``1 - tint * u`` (u uniform in [0, 1]), scaled so the brightest channel is 1.

    Drops and fog scatter the light around them: under green trees or a blue
    sky they take its colour, not pure white.
    """
    colour = 1.0 - tint * tf.random.stateless_uniform([3], seed)
    return colour / tf.reduce_max(colour)


def _row_fractions(height: tf.Tensor, rows) -> tf.Tensor:
    """Each row of an image ``height`` rows tall as a fraction of its photo's height, ``[H, 1, 1]``.

    ``rows`` is ``(first_row, photo_height)`` for a crop, or None for a whole photo.
    """
    first, total = (0, height) if rows is None else rows
    index = tf.cast(first, tf.float32) + tf.range(tf.cast(height, tf.float32))
    return (index / tf.maximum(tf.cast(total, tf.float32) - 1.0, 1.0))[:, None, None]


def _has_density(density) -> bool:
    return isinstance(density, list) or density > 0
