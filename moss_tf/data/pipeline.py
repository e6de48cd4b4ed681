"""tf.data pipelines: labeled and unlabeled training crops, and test sets.

Images leave this module in the model range [-1, 1], float32.

Training streams are infinite and deterministic: element ``k`` of a stream
is made from seed ``fold_in([seed, stream], k)`` with stateless random ops
(crop position, flip, rain), and the image order is a seeded shuffle per
epoch. Same seed, same batches, whatever the thread count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from moss_tf.data import builtin
from moss_tf.data.config import BUILTIN, DataConfig, LabeledConfig, RainConfig, resolve_path
from moss_tf.data.errors import DataError
from moss_tf.data.layouts import (
    Pair,
    find_images,
    find_pairs,
    find_test_splits,
    seeded_split,
    split_pairs,
)
from moss_tf.data.pool import ImagePool, MemoryBudget, load_images, load_pairs
from moss_tf.data.rain import RainSynthesizer
from moss_tf.data.ranges import to_model_range

__all__ = ["TrainingData", "build_test_sets", "build_training_data"]

log = logging.getLogger("moss_tf.data")

AUTOTUNE = tf.data.AUTOTUNE

# Stream ids keep the random numbers of the streams (and test styles) apart.
_LABELED, _UNLABELED, _TEST_LABELED_STYLE, _TEST_TARGET_STYLE = 1, 2, 3, 4


@dataclass
class TrainingData:
    """The two training streams and what they hold.

    Attributes:
        labeled: infinite, batched, prefetched ``(rainy, clean)``, each float32
            ``[batch_size, crop_size, crop_size, 3]`` in [-1, 1].
        unlabeled: infinite, batched, prefetched rainy float32
            ``[batch_size, crop_size, crop_size, 3]`` in [-1, 1], or None when
            not requested.
        num_labeled: labeled pairs (or clean backgrounds, for synthetic rain).
        num_unlabeled: unlabeled images (0 when ``unlabeled`` is None).
        description: one line per stream saying where the images come from.
    """

    labeled: tf.data.Dataset
    unlabeled: tf.data.Dataset | None
    num_labeled: int
    num_unlabeled: int
    description: str


# --------------------------------------------------------------------------- crops


def _crop_and_flip(images: list[tf.Tensor], crop: int, seed: tf.Tensor) -> list[tf.Tensor]:
    """The same random ``crop`` x ``crop`` window and horizontal flip for every image."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    shape = tf.shape(images[0])
    top = tf.random.stateless_uniform([], seeds[0], 0, shape[0] - crop + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[1], 0, shape[1] - crop + 1, dtype=tf.int32)
    flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
    out = []
    for image in images:
        window = image[top : top + crop, left : left + crop]
        window = tf.cond(flip, lambda w=window: tf.reverse(w, axis=[1]), lambda w=window: w)
        window.set_shape([crop, crop, image.shape[-1]])
        out.append(window)
    return out


def _stream(
    count: int,
    make: Callable[[tf.Tensor, tf.Tensor], object],
    *,
    seed: int,
    stream: int,
    batch_size: int,
    start_step: int,
) -> tf.data.Dataset:
    """Infinite dataset of ``make(image_index, element_seed)``, batched and prefetched.

    Images are visited in a seeded random order, each once per epoch. The
    first ``start_step`` batches are skipped before any image work is done.
    """
    base = tf.constant([seed, stream], dtype=tf.int64)

    def element(step, index):
        return make(index, tf.random.experimental.stateless_fold_in(base, step))

    order = tf.data.Dataset.range(count).shuffle(
        count, seed=seed * 1000 + stream, reshuffle_each_iteration=True
    )
    return (
        order.repeat()
        .enumerate()
        .skip(start_step * batch_size)
        .map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
        .batch(batch_size, drop_remainder=True)
        .prefetch(AUTOTUNE)
    )


def _to_unit(image_uint8: tf.Tensor) -> tf.Tensor:
    return tf.cast(image_uint8, tf.float32) / 255.0


# --------------------------------------------------------------------------- sources


class _Loader:
    """Resolves config paths and decodes images for one build, under one memory budget."""

    def __init__(self, cfg: DataConfig, min_side: int):
        self.cfg = cfg
        self.min_side = min_side
        self.budget = MemoryBudget(cfg.memory_limit_mb)

    def images(
        self, value: str, key: str, *, gray: bool = False, builtin_names=builtin.LABELED_PHOTOS
    ) -> tuple[ImagePool, list[Path]]:
        """Decode a folder / list of images, or ``builtin_names`` for ``builtin``."""
        paths = self.paths(value, key, builtin_names)
        arrays, kept = load_images(
            paths,
            what=f"{key} ({value})",
            on_bad_image=self.cfg.on_bad_image,
            max_side=self.cfg.max_side,
            min_side=1 if gray else self.min_side,
            budget=self.budget,
            gray=gray,
        )
        return ImagePool(arrays), kept

    @staticmethod
    def paths(value: str, key: str, builtin_names=builtin.LABELED_PHOTOS) -> list[Path]:
        """Image files of a folder or list (``key`` names it in errors), or built-in ones."""
        if value == BUILTIN:
            return builtin.builtin_paths(builtin_names)
        return find_images(resolve_path(value, key))

    def pairs(self, pairs: list[Pair], what: str) -> tuple[ImagePool, ImagePool, list[int]]:
        rainy, clean, clean_index, _ = load_pairs(
            pairs,
            what=what,
            on_bad_image=self.cfg.on_bad_image,
            max_side=self.cfg.max_side,
            min_side=self.min_side,
            budget=self.budget,
        )
        return ImagePool(rainy), ImagePool(clean), clean_index

    def synthesizer(self, rain: RainConfig, key: str) -> RainSynthesizer:
        layers = None
        if rain.streaks is not None:
            layers, _ = self.images(rain.streaks, f"{key}.streaks", gray=True)
        return RainSynthesizer(rain, layers)


def _labeled_pairs(cfg: DataConfig) -> tuple[list[Pair], list[Pair], str]:
    """(labeled pairs, leftover pairs, description) of ``data.labeled.pairs``."""
    source = resolve_path(cfg.labeled.pairs, "data.labeled.pairs")
    pairs, layout = find_pairs(source, cfg.on_bad_image)
    if cfg.labeled.fraction >= 1.0:
        return pairs, [], f"{len(pairs)} pairs from {source} ({layout})"
    labeled, rest = split_pairs(pairs, cfg.labeled.fraction, cfg.split_seed)
    return (
        labeled,
        rest,
        f"{len(labeled)} of {len(pairs)} pairs from {source} ({layout}; fraction "
        f"{cfg.labeled.fraction:g}, split_seed {cfg.split_seed})",
    )


def _clean_source(labeled: LabeledConfig) -> str:
    return labeled.clean if labeled.clean is not None else BUILTIN


def _training_clean(loader: _Loader, cfg: DataConfig) -> tuple[ImagePool, str]:
    """Clean backgrounds of ``data.labeled.clean`` minus the held-out test images."""
    value = _clean_source(cfg.labeled)
    paths = loader.paths(value, "data.labeled.clean")
    if cfg.labeled.holdout:
        held, paths = seeded_split(paths, cfg.labeled.holdout, cfg.split_seed)
        if not paths:
            raise DataError(
                f"data.labeled.holdout={cfg.labeled.holdout} leaves no training images "
                f"of {len(held)} in {value}"
            )
    arrays, kept = load_images(
        paths,
        what=f"data.labeled.clean ({value})",
        on_bad_image=cfg.on_bad_image,
        max_side=cfg.max_side,
        min_side=loader.min_side,
        budget=loader.budget,
    )
    where = "built-in photographs" if value == BUILTIN else value
    return ImagePool(arrays), f"{len(kept)} clean images from {where}"


def build_training_data(
    data_cfg: DataConfig,
    *,
    batch_size: int,
    crop_size: int,
    seed: int,
    with_unlabeled: bool,
    start_step: int = 0,
) -> TrainingData:
    """Build the labeled (and unlabeled) training streams of ``data_cfg``.

    Images are decoded once and kept in memory; each element is a random
    ``crop_size`` crop (same window and horizontal flip for rainy and clean),
    with rain synthesised on the crop when the config asks for it.

    Args:
        data_cfg: the ``data:`` section.
        batch_size: images per batch (remainders dropped; streams are infinite).
        crop_size: side of the square crops, in pixels.
        seed: training seed; same seed, same stream.
        with_unlabeled: build the unlabeled stream (stage ``semi``).
        start_step: begin with batch number ``start_step`` of the stream
            (default 0), for resuming: cheap, unlike ``dataset.skip``, which
            would make and discard every skipped crop.

    Returns:
        :class:`TrainingData` with tensors in [-1, 1].

    Raises:
        ConfigError: a configured path does not exist (names the key).
        DataError / ImageError: unusable folders or files (names them).

    Example::

        data = build_training_data(cfg.data, batch_size=8, crop_size=64, seed=0,
                                   with_unlabeled=True)
        rainy, clean = next(iter(data.labeled))  # [8, 64, 64, 3] in [-1, 1]
    """
    cfg = data_cfg
    loader = _Loader(cfg, min_side=crop_size)
    descriptions = []
    rest: list[Pair] = []

    # Labeled stream.
    if cfg.labeled.pairs is not None:
        pairs, rest, text = _labeled_pairs(cfg)
        rainy_pool, clean_pool, clean_index = loader.pairs(pairs, "data.labeled.pairs")
        clean_of = tf.constant(clean_index, dtype=tf.int32)

        def labeled_example(index, element_seed):
            rainy = rainy_pool.get(index)
            clean = clean_pool.get(clean_of[index])
            rainy, clean = _crop_and_flip([rainy, clean], crop_size, element_seed)
            return to_model_range(rainy), to_model_range(clean)

        num_labeled = len(rainy_pool)
    else:
        clean_pool, text = _training_clean(loader, cfg)
        rain = loader.synthesizer(cfg.labeled.rain, "data.labeled.rain")
        text += f" + rain ({cfg.labeled.rain.preset} preset)"

        def labeled_example(index, element_seed):
            crop_seed, rain_seed = tf.unstack(tf.random.experimental.stateless_split(element_seed))
            (clean,) = _crop_and_flip([clean_pool.get(index)], crop_size, crop_seed)
            clean = _to_unit(clean)
            return to_model_range(rain(clean, rain_seed)), to_model_range(clean)

        num_labeled = len(clean_pool)
    descriptions.append(f"labeled: {text}")
    labeled = _stream(
        num_labeled,
        labeled_example,
        seed=seed,
        stream=_LABELED,
        batch_size=batch_size,
        start_step=start_step,
    )

    # Unlabeled stream.
    unlabeled, num_unlabeled = None, 0
    if with_unlabeled:
        make, num_unlabeled, text = _unlabeled_source(loader, cfg, rest, crop_size)
        descriptions.append(f"unlabeled: {text}")
        unlabeled = _stream(
            num_unlabeled,
            make,
            seed=seed,
            stream=_UNLABELED,
            batch_size=batch_size,
            start_step=start_step,
        )
    description = "\n".join(descriptions)
    log.info("training data:\n%s", description)
    return TrainingData(labeled, unlabeled, num_labeled, num_unlabeled, description)


def _unlabeled_source(
    loader: _Loader, cfg: DataConfig, rest: list[Pair], crop_size: int
) -> tuple[Callable, int, str]:
    """(element function, image count, description) of the unlabeled stream."""
    unlabeled = cfg.unlabeled
    synthetic = unlabeled.clean
    if synthetic is None and unlabeled.rainy is None and not rest and cfg.labeled.is_builtin:
        synthetic = BUILTIN
    if synthetic is not None:
        clean_pool, _ = loader.images(
            synthetic, "data.unlabeled.clean", builtin_names=builtin.UNLABELED_PHOTOS
        )
        rain = loader.synthesizer(unlabeled.rain, "data.unlabeled.rain")
        where = "built-in photographs" if synthetic == BUILTIN else synthetic

        def make(index, element_seed):
            crop_seed, rain_seed = tf.unstack(tf.random.experimental.stateless_split(element_seed))
            (clean,) = _crop_and_flip([clean_pool.get(index)], crop_size, crop_seed)
            return to_model_range(rain(_to_unit(clean), rain_seed))

        text = (
            f"{len(clean_pool)} clean images from {where} + rain ({unlabeled.rain.preset} preset)"
        )
        return make, len(clean_pool), text

    paths: list[Path] = [p.rainy for p in rest]
    parts = [f"{len(rest)} rainy inputs of the unlabeled pairs"] if rest else []
    if unlabeled.rainy is not None:
        real = loader.paths(unlabeled.rainy, "data.unlabeled.rainy")
        paths += real
        parts.append(f"{len(real)} rainy images from {unlabeled.rainy}")
    if not paths:
        raise DataError(
            "no unlabeled images: set data.unlabeled.rainy (real rainy photos), "
            "data.unlabeled.clean (synthetic rain), or data.labeled.fraction < 1"
        )
    arrays, kept = load_images(
        paths,
        what="unlabeled images",
        on_bad_image=cfg.on_bad_image,
        max_side=cfg.max_side,
        min_side=crop_size,
        budget=loader.budget,
    )
    pool = ImagePool(arrays)

    def make(index, element_seed):
        (rainy,) = _crop_and_flip([pool.get(index)], crop_size, element_seed)
        return to_model_range(rainy)

    text = " + ".join(parts) + (f" ({len(kept)} usable)" if len(kept) != len(paths) else "")
    return make, len(pool), text


# --------------------------------------------------------------------------- test sets


def _pairs_dataset(
    rainy: ImagePool, clean: ImagePool, clean_index: list[int], names: list[str]
) -> tf.data.Dataset:
    name_of = tf.constant(names)
    clean_of = tf.constant(clean_index, dtype=tf.int32)

    def element(index):
        return {
            "name": name_of[index],
            "rainy": to_model_range(rainy.get(index)),
            "clean": to_model_range(clean.get(clean_of[index])),
        }

    return tf.data.Dataset.range(len(names)).map(element)


def _synthetic_split(
    clean: list[np.ndarray], names: list[str], rain: RainSynthesizer, seed: int, style: int
) -> tf.data.Dataset:
    """Test pairs of ``clean`` images with rain made under fixed seeds, rainy rounded to uint8.

    Rounding the rainy images to uint8 makes them exactly what a saved PNG
    would hold, like every file-based test set.
    """
    base = tf.constant([seed, style], dtype=tf.int64)
    rainy = []
    for index, image in enumerate(clean):
        element_seed = tf.random.experimental.stateless_fold_in(base, index)
        wet = rain(_to_unit(tf.constant(image)), element_seed)
        rainy.append(np.round(wet.numpy() * 255.0).astype(np.uint8))
    clean_pool = ImagePool(list(clean))  # the pool empties the list it is given
    return _pairs_dataset(ImagePool(rainy), clean_pool, list(range(len(names))), names)


def build_test_sets(data_cfg: DataConfig) -> dict[str, tf.data.Dataset]:
    """Named test splits: dicts ``{"name", "rainy", "clean"}``, unbatched and finite.

    ``name`` is a tf.string (the rainy file's stem or a tile id); ``rainy`` and
    ``clean`` are float32 ``[H, W, 3]`` in [-1, 1], sizes may differ between
    elements. The order is fixed (natural file order).

    Splits:
        * ``data.test`` set: its splits (see :func:`moss_tf.data.layouts.find_test_splits`;
          the DDN-SIRR test gives ``dense`` and ``sparse``).
        * built-in data: ``labeled_style`` (the labeled rain) and
          ``target_style`` (the unlabeled rain) on the same 8 held-out tiles.
        * ``data.labeled.clean`` with ``holdout``: ``labeled_style`` on the
          held-out images, plus ``target_style`` when ``data.unlabeled.clean``
          is set.

    Raises:
        ConfigError, DataError, ImageError: as for the training data.
    """
    cfg = data_cfg
    loader = _Loader(cfg, min_side=1)
    if cfg.test is not None:
        source = resolve_path(cfg.test, "data.test")
        sets = {}
        for name, pairs in find_test_splits(source, cfg.on_bad_image).items():
            rainy, clean, clean_index, kept = load_pairs(
                pairs, what=f"data.test ({source})", on_bad_image=cfg.on_bad_image
            )
            names = [p.name for p in kept]
            sets[name] = _pairs_dataset(ImagePool(rainy), ImagePool(clean), clean_index, names)
        return sets

    if cfg.labeled.is_builtin:
        clean, names = builtin.builtin_test_tiles()
        with_target = True
    elif cfg.labeled.clean is not None and cfg.labeled.holdout:
        paths = loader.paths(cfg.labeled.clean, "data.labeled.clean")
        held, _ = seeded_split(paths, cfg.labeled.holdout, cfg.split_seed)
        clean, kept = load_images(held, what="data.labeled.holdout", on_bad_image=cfg.on_bad_image)
        names = [p.stem for p in kept]
        with_target = cfg.unlabeled.clean is not None
    else:
        raise DataError(
            "no test set: set data.test=PATH (a folder in any paired layout), or "
            "data.labeled.holdout=N to hold out N of the data.labeled.clean images"
        )
    sets = {
        "labeled_style": _synthetic_split(
            clean,
            names,
            loader.synthesizer(cfg.labeled.rain, "data.labeled.rain"),
            cfg.split_seed,
            _TEST_LABELED_STYLE,
        )
    }
    if with_target:
        sets["target_style"] = _synthetic_split(
            clean,
            names,
            loader.synthesizer(cfg.unlabeled.rain, "data.unlabeled.rain"),
            cfg.split_seed,
            _TEST_TARGET_STYLE,
        )
    return sets
