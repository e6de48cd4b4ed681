"""The ``data:`` section of an experiment config.

Where labeled pairs, unlabeled rainy images and test pairs come from, and how
rain is synthesised. With no dataset given (all defaults), the built-in demo
data is used: scikit-image's bundled photographs with synthetic rain, no
download and no ``../shared``.

Sources, by key (paths are folders or file lists, see :mod:`moss_tf.data.layouts`):

* ``labeled.pairs``: rainy/clean pairs in any paired layout;
  ``labeled.fraction`` keeps labels on that fraction (split by
  ``split_seed``) and the rainy inputs of the rest join the unlabeled set.
* ``labeled.clean``: clean images; rainy inputs synthesised with
  ``labeled.rain``; ``labeled.holdout`` images are held out for test pairs.
* ``unlabeled.rainy``: real rainy images (no clean targets).
* ``unlabeled.clean``: clean images with rain ``unlabeled.rain`` added (a
  synthetic "real" domain); the clean images are never shown to training.
* ``test``: test pairs in any paired layout; replaces the synthesised splits.

``clean: builtin`` names the bundled photographs; leaving both ``pairs`` and
``clean`` unset means ``builtin`` too.

Relative paths are resolved against the current directory first, then the
repository root (the folder that holds ``configs/``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moss_tf.errors import ConfigError

__all__ = [
    "BUILTIN",
    "RAIN_PRESETS",
    "DataConfig",
    "LabeledConfig",
    "RainConfig",
    "UnlabeledConfig",
    "resolve_path",
]

BUILTIN = "builtin"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Rain presets. Lengths and widths are in pixels of the image being rained on
# (rain is drawn on the crop at native resolution); angles in degrees from
# vertical, positive = the top of a streak leans right; intensities and haze
# in [0, 1]. ``light``/``heavy`` are general purpose; ``fine_vertical`` and
# ``slanted_dense`` are the two deliberately different styles of the built-in
# demo (labeled domain A, target domain B); ``slanted_haze`` is the demo's
# earlier style B, further from A.
RAIN_PRESETS: dict[str, dict[str, Any]] = {
    "light": {
        "density": 0.004,
        "length": [10.0, 25.0],
        "width": [1.0, 1.5],
        "angle": [-10.0, 10.0],
        "intensity": [0.3, 0.6],
        "haze": [0.0, 0.0],
        "blend": "screen",
    },
    "heavy": {
        "density": 0.02,
        "length": [20.0, 45.0],
        "width": [1.5, 2.5],
        "angle": [-20.0, 20.0],
        "intensity": [0.5, 0.9],
        "haze": [0.1, 0.3],
        "blend": "screen",
    },
    "fine_vertical": {
        "density": 0.008,
        "length": [15.0, 35.0],
        "width": [1.0, 1.5],
        "angle": [-5.0, 5.0],
        "intensity": [0.4, 0.8],
        "haze": [0.0, 0.0],
        "blend": "screen",
    },
    "slanted_haze": {
        "density": 0.006,
        "length": [10.0, 20.0],
        "width": [1.5, 2.5],
        "angle": [25.0, 40.0],
        "intensity": [0.25, 0.5],
        # A light veil: a heavier one changes the image more than any streak
        # does, and no network trained on style A could learn to remove it,
        # so the demo's domain gap would be haze rather than rain.
        "haze": [0.0, 0.08],
        "blend": "add",
    },
    # The demo's style B: thicker, denser streaks leaning 8-18 degrees, where
    # style A's lean at most 5. Close enough to A that a network trained on A
    # already removes part of it (so every network beats the rainy input),
    # far enough that it leaves the rest.
    "slanted_dense": {
        "density": 0.01,
        "length": [15.0, 35.0],
        "width": [1.5, 2.5],
        "angle": [8.0, 18.0],
        "intensity": [0.4, 0.8],
        "haze": [0.0, 0.0],
        "blend": "screen",
    },
    # Rain spanning real rain, per image: density log-uniform from a drizzle to
    # a downpour, one shared angle for procedural streaks and streak layers,
    # streak blur (some images sharp), an atmospheric-scattering veil on half
    # the images with rain of density 0.002 or more (thicker at the top,
    # standing in for depth; never on a drizzle), and 10% of the images left
    # clean. The dense end scores about 15-20 dB PSNR against the clean
    # image, the median about 27 dB (``heavy``: about 7 dB; measured with
    # ``python -m moss_tf.data.rain_samples --stats``).
    "realistic": {
        "density": [0.0005, 0.012],
        "length": [8.0, 35.0],
        "width": [1.0, 2.5],
        "angle": [-25.0, 25.0],
        "intensity": [0.15, 0.5],
        "haze": [0.0, 0.0],
        "blend": "screen",
        "blur": [0.0, 1.5],
        "veil_probability": 0.5,
        "veil_min_density": 0.002,
        "veil_transmission": [0.7, 1.0],
        "veil_gradient": [0.0, 0.8],
        "airlight": [0.75, 0.95],
        "airlight_tint": 0.03,
        "clean_probability": 0.1,
        "shared_angle": True,
        "streak_rotation": [-5.0, 5.0],
        "streak_intensity": [0.1, 0.5],
    },
}

# Defaults shared by all presets: streak-layer compositing (used only when
# ``streaks`` names a folder), then blur, veil and clean images.
_STREAK_DEFAULTS: dict[str, Any] = {
    "streak_scale": [0.75, 1.5],
    "streak_rotation": [-10.0, 10.0],
    "streak_intensity": [0.6, 1.0],
    # Off unless a preset or the config turns them on, so the older presets
    # give the same rain as before these keys existed.
    "blur": [0.0, 0.0],
    "veil_probability": 0.0,
    "veil_min_density": 0.0,
    "veil_transmission": [1.0, 1.0],
    "veil_gradient": [0.0, 0.0],
    "airlight": [0.8, 0.95],
    "airlight_tint": 0.0,
    "clean_probability": 0.0,
    "shared_angle": False,
    # Streaks at several depths and rain accumulation that grows with
    # distance (issue 29): off (no layers, probability 0) unless a preset or
    # the config turns them on, so earlier rain is drawn exactly as before.
    "depth_layers": [0, 0],
    "depth_length": [8.0, 80.0],
    "depth_width": [1.0, 3.5],
    "depth_blur": [0.0, 2.0],
    "depth_intensity": [0.25, 0.45],
    "depth_density": [0.004, 0.0001],
    "depth_exposure": [1.0, 1.0],
    "accumulation_probability": 0.0,
    "accumulation_near": [0.8, 1.0],
    "accumulation_far": [0.4, 0.7],
    "accumulation_horizon": [0.3, 0.6],
    "accumulation_airlight": [0.35, 0.9],
    "crisp_probability": 0.0,
    "light_tint": 0.0,
}

_RANGE_KEYS = ("length", "width", "angle", "intensity", "haze")
_STREAK_RANGE_KEYS = ("streak_scale", "streak_rotation", "streak_intensity")
BLENDS = ("screen", "add")
BAD_IMAGE_POLICIES = ("error", "skip")
LOAD_MODES = ("auto", "memory", "stream")
MAX_DEPTH_LAYERS = 8  # rain.depth_layers: each layer costs a streak rendering
# Test splits synthesised on held-out images (besides data.holdout_rain's).
SYNTHETIC_SPLITS = ("labeled_style", "target_style")


def _fail(where: str, key: str, message: str) -> None:
    raise ConfigError(f"{where}.{key}: {message}" if where else f"{key}: {message}")


def _check_range(values: list[float], where: str, key: str, low: float, high: float) -> None:
    if len(values) != 2 or not (low <= values[0] <= values[1] <= high):
        _fail(where, key, f"must be [min, max] with {low} <= min <= max <= {high}, got {values}")


def _check_pair(values: list[float], where: str, key: str, low: float, high: float) -> None:
    """A [far, near] pair: two values in [low, high], in either order."""
    if len(values) != 2 or not all(low <= v <= high for v in values):
        _fail(where, key, f"must be [far, near] with both in [{low}, {high}], got {values}")


def _check_probability(value: float, where: str, key: str) -> None:
    if not 0.0 <= value <= 1.0:
        _fail(where, key, f"must be a probability in [0, 1], got {value}")


@dataclass
class RainConfig:
    """Synthetic rain: procedural streaks and/or composited streak-layer images.

    ``preset`` fills every key left unset (``null``); keys given explicitly win.
    After construction all keys hold concrete values, so a saved config
    shows exactly what was used.

    Attributes:
        preset: ``light``, ``heavy``, ``fine_vertical``, ``slanted_dense``, ``slanted_haze`` or
            ``realistic`` (every key below drawn per image from a wide range).
        density: probability that a pixel starts a procedural streak
            (0 = no procedural streaks), e.g. 0.004 light ... 0.02 heavy; or
            [min, max] with min > 0, drawn log-uniformly per image.
        length: [min, max] streak length in pixels, drawn per image.
        width: [min, max] streak thickness in pixels, drawn per image.
        angle: [min, max] degrees from vertical (positive leans right), per image.
        intensity: [min, max] streak brightness in [0, 1], per streak.
        haze: [min, max] strength in [0, 1] of a bright veil (rain
            accumulation) blended over the image before the streaks.
        blend: ``screen`` (``1 - (1-I)(1-R)``, never saturates abruptly) or
            ``add`` (``clip(I + R, 0, 1)``).
        streaks: folder (or list file) of streak-layer images, white streaks on
            black (e.g. Garg & Nayar's); ``null`` = procedural streaks only.
        streak_scale: [min, max] zoom applied to a layer.
        streak_rotation: [min, max] degrees a layer is rotated by.
        streak_intensity: [min, max] factor on a layer's brightness, per image.
        blur: [min, max] standard deviation in pixels of a Gaussian blur of
            the rain layer, per image (below 0.3 the streaks stay sharp).
        veil_probability: probability that an image gets a veil
            ``I = B t + A (1 - t)`` (atmospheric scattering: background B,
            airlight A, transmission t), applied before the streaks.
        veil_min_density: only images whose procedural-streak ``density`` is
            at least this can get a veil (0 = any image): the veil is light
            scattered by dense rain, and a network taught to lift a veil off
            lightly rained photos dims every clear photo a little.
        veil_transmission: [min, max] transmission t at the top of the image,
            per image (1 = no veil).
        veil_gradient: [min, max] share of the veil that fades out from the
            top of the image to its bottom (0 = uniform veil), standing in
            for depth.
        airlight: [min, max] grey level of the airlight A, per image.
        airlight_tint: at most this much is added to or taken from each
            colour channel of A, per image (0 = neutral grey).
        clean_probability: probability that an image is left clean (no rain,
            no veil), so a network learns to leave rain-free images alone.
        shared_angle: rotate the streak layers by the procedural streaks'
            angle (plus ``streak_rotation``), as rain in one photo falls alike.
        depth_layers: [min, max] number of extra procedural streak layers per
            image, each at its own depth (drawn per image; [0, 0] = off). A
            layer's nearness u is uniform in [0, 1]; each ``depth_*`` pair
            below is [far, near] and the layer takes the value between them
            at u (density geometrically): far rain is short, thin, sharp,
            dense and dim, near rain long, wide, out of focus and sparse.
            The layers fall at the image's angle, are blurred on their own
            (not by ``blur``) and are screened onto the other streaks.
        depth_length: [far, near] streak length in pixels.
        depth_width: [far, near] streak width in pixels.
        depth_blur: [far, near] standard deviation of the defocus blur, pixels.
        depth_intensity: [far, near] brightness of a layer's brightest streak
            (each streak is 0.5 to 1 times it).
        depth_density: [far, near] probability that a pixel starts a streak.
        depth_exposure: [min, max] factor on every layer's length, per image,
            drawn log-uniformly: a longer exposure draws longer streaks.
        accumulation_probability: probability that an image gets rain
            accumulation (a veil ``I = B t + A (1 - t)`` thickening with
            distance), applied after ``veil`` and before the streaks, only
            with ``density`` >= ``veil_min_density``; 0 = off. Distance comes
            from the image row, as on a ground plane seen level: rows at
            and above the horizon are far, distance falls towards the bottom
            row as ``1 / (row - horizon)``. Training crops use their rows in
            the whole photo.
        accumulation_near: [min, max] transmission t at the bottom row.
        accumulation_far: [min, max] transmission at and above the horizon
            (t never falls below it).
        accumulation_horizon: [min, max] horizon row, as a fraction of the
            image height from the top.
        accumulation_airlight: [min, max] grey level of the airlight A (each
            channel moved by up to ``airlight_tint``); rain fog seen against
            an overcast sky is often darker than white.
        crisp_probability: probability that an image's procedural streaks
            are crisp: flat bars with hard edges, resampled by nearest
            neighbour, so a one-pixel streak stays one pixel wide (rendered
            rain in street-scene benchmarks looks like this); the others are
            soft (tapered, Gaussian across, bilinear); 0 = off. Only the
            main streak layer: the depth layers keep their soft profile and
            their own ``depth_blur``.
        light_tint: how far the colour of the light in the rain may be
            from white, per image: each channel's brightness is
            ``1 - light_tint * u`` (u uniform in [0, 1]) relative to the
            brightest channel, applied to every streak layer and to the
            airlight of the veil and the accumulation alike; 0 = white
            light. Drops and fog scatter the light around them
            (street-scene benchmarks render both green-grey, about
            0.8 / 1 / 0.8, the colour of their scenes).
    """

    preset: str = "light"
    density: float | list[float] | None = None
    length: list[float] | None = None
    width: list[float] | None = None
    angle: list[float] | None = None
    intensity: list[float] | None = None
    haze: list[float] | None = None
    blend: str | None = None
    streaks: str | None = None
    streak_scale: list[float] | None = None
    streak_rotation: list[float] | None = None
    streak_intensity: list[float] | None = None
    blur: list[float] | None = None
    veil_probability: float | None = None
    veil_min_density: float | None = None
    veil_transmission: list[float] | None = None
    veil_gradient: list[float] | None = None
    airlight: list[float] | None = None
    airlight_tint: float | None = None
    clean_probability: float | None = None
    shared_angle: bool | None = None
    depth_layers: list[int] | None = None
    depth_length: list[float] | None = None
    depth_width: list[float] | None = None
    depth_blur: list[float] | None = None
    depth_intensity: list[float] | None = None
    depth_density: list[float] | None = None
    depth_exposure: list[float] | None = None
    accumulation_probability: float | None = None
    accumulation_near: list[float] | None = None
    accumulation_far: list[float] | None = None
    accumulation_horizon: list[float] | None = None
    accumulation_airlight: list[float] | None = None
    crisp_probability: float | None = None
    light_tint: float | None = None

    def __post_init__(self) -> None:
        # An unknown preset is reported by validate(), which knows the key path.
        defaults = {**_STREAK_DEFAULTS, **RAIN_PRESETS.get(self.preset, {})}
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, list(value) if isinstance(value, list) else value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, where: str) -> None:
        if self.preset not in RAIN_PRESETS:
            _fail(
                where, "preset", f"unknown preset {self.preset!r}; known: {', '.join(RAIN_PRESETS)}"
            )
        if isinstance(self.density, list):
            if len(self.density) != 2 or not 0.0 < self.density[0] <= self.density[1] <= 0.5:
                _fail(
                    where,
                    "density",
                    f"a range must be [min, max] with 0 < min <= max <= 0.5, got {self.density}",
                )
        elif not 0.0 <= self.density <= 0.5:
            _fail(where, "density", f"must be in [0, 0.5], got {self.density}")
        _check_range(self.length, where, "length", 1.0, 512.0)
        _check_range(self.width, where, "width", 0.5, 32.0)
        _check_range(self.angle, where, "angle", -90.0, 90.0)
        _check_range(self.intensity, where, "intensity", 0.0, 1.0)
        _check_range(self.haze, where, "haze", 0.0, 1.0)
        if self.blend not in BLENDS:
            _fail(where, "blend", f"must be one of {', '.join(BLENDS)}, got {self.blend!r}")
        _check_range(self.streak_scale, where, "streak_scale", 0.05, 20.0)
        _check_range(self.streak_rotation, where, "streak_rotation", -180.0, 180.0)
        _check_range(self.streak_intensity, where, "streak_intensity", 0.0, 4.0)
        _check_range(self.blur, where, "blur", 0.0, 8.0)
        _check_probability(self.veil_probability, where, "veil_probability")
        if not 0.0 <= self.veil_min_density <= 0.5:
            _fail(where, "veil_min_density", f"must be in [0, 0.5], got {self.veil_min_density}")
        _check_range(self.veil_transmission, where, "veil_transmission", 0.05, 1.0)
        _check_range(self.veil_gradient, where, "veil_gradient", 0.0, 1.0)
        _check_range(self.airlight, where, "airlight", 0.0, 1.0)
        if not 0.0 <= self.airlight_tint <= 0.2:
            _fail(where, "airlight_tint", f"must be in [0, 0.2], got {self.airlight_tint}")
        _check_probability(self.clean_probability, where, "clean_probability")
        if self.clean_probability == 1.0:
            _fail(where, "clean_probability", "is 1: every image would be left clean")
        if self.density == 0.0 and self.streaks is None:
            _fail(where, "density", "is 0 and no streaks folder is set: this rain adds nothing")
        self._validate_depth(where)
        self._validate_accumulation(where)

    def _validate_depth(self, where: str) -> None:
        layers = self.depth_layers
        if len(layers) != 2 or not 0 <= layers[0] <= layers[1] <= MAX_DEPTH_LAYERS:
            _fail(
                where,
                "depth_layers",
                f"must be [min, max] whole numbers with 0 <= min <= max <= {MAX_DEPTH_LAYERS}, "
                f"got {layers}",
            )
        _check_pair(self.depth_length, where, "depth_length", 1.0, 512.0)
        _check_pair(self.depth_width, where, "depth_width", 0.5, 32.0)
        _check_pair(self.depth_blur, where, "depth_blur", 0.0, 8.0)
        _check_pair(self.depth_intensity, where, "depth_intensity", 0.0, 1.0)
        _check_pair(self.depth_density, where, "depth_density", 1e-6, 0.5)
        _check_range(self.depth_exposure, where, "depth_exposure", 0.1, 10.0)

    def _validate_accumulation(self, where: str) -> None:
        _check_probability(self.accumulation_probability, where, "accumulation_probability")
        _check_range(self.accumulation_near, where, "accumulation_near", 0.05, 1.0)
        _check_range(self.accumulation_far, where, "accumulation_far", 0.05, 1.0)
        _check_range(self.accumulation_horizon, where, "accumulation_horizon", 0.0, 0.95)
        _check_range(self.accumulation_airlight, where, "accumulation_airlight", 0.0, 1.0)
        _check_probability(self.crisp_probability, where, "crisp_probability")
        if not 0.0 <= self.light_tint < 1.0:
            _fail(where, "light_tint", f"must be in [0, 1), got {self.light_tint}")


def _style_a() -> RainConfig:
    return RainConfig(preset="fine_vertical")


def _style_b() -> RainConfig:
    return RainConfig(preset="slanted_dense")


@dataclass
class LabeledConfig:
    """Labeled rainy/clean pairs: real pairs (``pairs``) or clean images plus rain.

    Attributes:
        pairs: paired folder in any supported layout, or a pair list file.
        fraction: share of ``pairs`` that keeps its labels, in (0, 1]
            (default 1). The split is by ``data.split_seed``; the rainy inputs
            of the other pairs join the unlabeled set (the paper's Rain200H
            10% / 40% protocol).
        clean: folder or list of clean images, or ``builtin``; rainy inputs
            are synthesised on the fly with ``rain``.
        holdout: number of ``clean`` images held out (by ``data.split_seed``)
            to synthesise test pairs when ``data.test`` is unset (default 0).
            The built-in data has a fixed held-out set instead.
        rain: rain added to ``clean`` (default preset ``fine_vertical``).
        extra_clean: more folders (or lists) of clean images that join the
            training backgrounds of ``clean`` (default none); never held out,
            so the held-out test images stay those of ``clean``.
    """

    pairs: str | None = None
    fraction: float = 1.0
    clean: str | None = None
    holdout: int = 0
    rain: RainConfig = field(default_factory=_style_a)
    extra_clean: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def is_builtin(self) -> bool:
        return self.pairs is None and (self.clean is None or self.clean == BUILTIN)

    def validate(self, where: str) -> None:
        if self.pairs is not None and self.clean is not None:
            _fail(
                where, "pairs", "set either pairs (real pairs) or clean (synthetic rain), not both"
            )
        if not 0.0 < self.fraction <= 1.0:
            _fail(where, "fraction", f"must be in (0, 1], got {self.fraction}")
        if self.fraction < 1.0 and self.pairs is None:
            _fail(where, "fraction", "only applies to labeled.pairs")
        if self.holdout < 0:
            _fail(where, "holdout", f"must be >= 0, got {self.holdout}")
        if self.holdout and (self.pairs is not None or self.is_builtin):
            _fail(where, "holdout", "only applies to a labeled.clean folder or list")
        if self.extra_clean and self.pairs is not None:
            _fail(where, "extra_clean", "adds backgrounds for synthetic rain: not with pairs")
        self.rain.validate(f"{where}.rain")


@dataclass
class UnlabeledConfig:
    """Unlabeled rainy images for stage ``semi``.

    Attributes:
        rainy: folder or list file of real rainy photographs.
        clean: folder or list of clean images, or ``builtin``: rain ``rain``
            is added and the clean image thrown away (a synthetic target domain).
        rain: rain for ``clean`` (default preset ``slanted_dense``, unlike the
            labeled default, so the two domains differ).

    With neither set, the unlabeled set is: the built-in photographs when the
    labeled data is built-in, otherwise only the inputs left over by
    ``labeled.fraction`` (and an error if there are none).
    """

    rainy: str | None = None
    clean: str | None = None
    rain: RainConfig = field(default_factory=_style_b)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, where: str) -> None:
        if self.rainy is not None and self.clean is not None:
            _fail(
                where, "rainy", "set either rainy (real photos) or clean (synthetic rain), not both"
            )
        self.rain.validate(f"{where}.rain")


@dataclass
class DataConfig:
    """Where labeled, unlabeled and test images come from (defaults: built-in demo data).

    Attributes:
        labeled: see :class:`LabeledConfig`.
        unlabeled: see :class:`UnlabeledConfig`.
        test: test pairs in any paired layout (``--set data.test=PATH``); when
            set it replaces the synthesised test splits. A folder whose
            sub-folders are paired layouts gives one split per sub-folder.
        on_bad_image: ``error`` (default) raises an ImageError naming the file;
            ``skip`` logs one warning per file plus a count and goes on. Covers
            unreadable files, pairs of different sizes, missing partners and
            training images smaller than the crop.
        split_seed: seed of the labeled-fraction split and the hold-out choice
            (default 0), independent of the training seed.
        max_side: training images whose longer side exceeds this are
            downscaled on load so memory stays bounded (default 1024, ``null``
            = never). Test images are never resized.
        max_pixels: images (training and test) with more pixels than this
            are refused from their header, unread; with ``on_bad_image: skip``
            they are skipped. Default ``null``:
            :data:`moss_tf.data.images.MAX_PIXELS` (8192 x 8192).
        memory_limit_mb: megabytes of decoded training images that may be
            held in memory (default 8192).
        load: ``auto`` (default) holds a source's decoded images in memory
            when they fit under ``memory_limit_mb`` and streams it from its
            files otherwise, decided per source from the file headers;
            ``memory`` always decodes once into memory (more than
            ``memory_limit_mb`` is an error); ``stream`` always reads and
            decodes files per crop inside the tf.data graph (memory does not
            grow with the dataset).
        service: address of a tf.data service dispatcher (``host:port`` or
            ``grpc://host:port``); the training streams are then made by its
            workers instead of this process (default ``null``: locally). One
            worker gives exactly the local stream; every worker must be able
            to read the data paths.
        holdout_rain: extra test splits on the held-out images
            (``labeled.holdout``), one per name, each with its own rain
            (a rain mapping as ``labeled.rain``, or ``null`` for no rain: the
            network should leave those images alone). E.g. ``none``,
            ``light`` and ``heavy`` splits to score a model per density.
        validation: more paired test splits, by name: a folder in any paired
            layout or a pair list each, scored beside the splits above in
            training's validation and by ``evaluate.py`` (``--test`` replaces
            them too). For rain the project did not make, to choose
            checkpoints (``train.select_on``) and recipes on: these pairs are
            never trained on, and a folder that is also a training source is
            an error.
    """

    labeled: LabeledConfig = field(default_factory=LabeledConfig)
    unlabeled: UnlabeledConfig = field(default_factory=UnlabeledConfig)
    test: str | None = None
    on_bad_image: str = "error"
    split_seed: int = 0
    max_side: int | None = 1024
    max_pixels: int | None = None
    memory_limit_mb: int = 8192
    load: str = "auto"
    service: str | None = None
    holdout_rain: dict[str, RainConfig | None] = field(default_factory=dict)
    validation: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, where: str = "data") -> None:
        """Raise ConfigError, naming ``where.key``, for impossible values."""
        self.labeled.validate(f"{where}.labeled")
        self.unlabeled.validate(f"{where}.unlabeled")
        for name, rain in self.holdout_rain.items():
            if rain is not None:
                rain.validate(f"{where}.holdout_rain.{name}")
        if self.holdout_rain and not self.labeled.holdout:
            _fail(where, "holdout_rain", "needs data.labeled.holdout images to rain on")
        self._validate_validation(where)
        if self.labeled.fraction < 1.0 and self.unlabeled.clean is not None:
            _fail(
                where,
                "unlabeled.clean",
                "cannot be combined with labeled.fraction < 1 (whose leftover inputs are "
                "the unlabeled set); use unlabeled.rainy to add real rainy photos instead",
            )
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            _fail(
                where,
                "on_bad_image",
                f"must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {self.on_bad_image!r}",
            )
        if self.max_side is not None and self.max_side < 16:
            _fail(where, "max_side", f"must be >= 16 or null, got {self.max_side}")
        if self.max_pixels is not None and self.max_pixels < 1:
            _fail(where, "max_pixels", f"must be >= 1 or null, got {self.max_pixels}")
        if self.memory_limit_mb < 1:
            _fail(where, "memory_limit_mb", f"must be >= 1, got {self.memory_limit_mb}")
        if self.load not in LOAD_MODES:
            _fail(where, "load", f"must be one of {', '.join(LOAD_MODES)}, got {self.load!r}")
        if self.service is not None and not re.fullmatch(r"(grpcs?://)?[^:/\s]+:\d+", self.service):
            _fail(where, "service", f"must be host:port or grpc://host:port, got {self.service!r}")

    def _validate_validation(self, where: str) -> None:
        taken = {*self.holdout_rain, *SYNTHETIC_SPLITS}
        for name, path in self.validation.items():
            if not name or "/" in name:
                _fail(where, f"validation.{name}", "a split name must be non-empty, without '/'")
            if name in taken:
                _fail(
                    where,
                    f"validation.{name}",
                    f"the split name {name!r} is already taken by a synthesised split "
                    f"({', '.join(sorted(taken))}); choose another",
                )
            if not path:
                _fail(where, f"validation.{name}", "must name a paired folder or pair list")


def resolve_path(value: str, key: str) -> Path:
    """Find the file or folder a config value names.

    Relative paths are tried against the current directory, then the
    repository root, so ``../shared/data/x`` works from the repository root
    and from an installed checkout alike.

    Raises:
        ConfigError: naming ``key`` and every location tried.
    """
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, REPO_ROOT / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    tried = " or ".join(str(c.resolve()) for c in dict.fromkeys(candidates))
    raise ConfigError(f"{key}: {value!r} not found (looked for {tried})")
