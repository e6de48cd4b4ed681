"""tf.data pipelines: labeled and unlabeled training crops, and test sets.

Images leave this module in the model range [-1, 1], float32.

Training streams are infinite and deterministic: element ``k`` of a stream
is made from seed ``fold_in([seed, stream], k)`` with stateless random ops
(crop position, flip, rain), and the image order is a seeded shuffle per
epoch. Same seed, same batches, whatever the thread count.

A worker of a cluster makes only its rows of each global batch
(:meth:`TrainingData.rows`): the image order is computed for the whole
batch (indices only), the other rows are dropped before any file is read,
and the kept rows are exactly those of the global batch. Each worker thus
reads and decodes its share of the files, not all of them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from moss_tf.data import builtin
from moss_tf.data.data_config import BUILTIN, DataConfig, RainConfig, resolve_path
from moss_tf.data.images import pixel_limit
from moss_tf.data.layouts import (
    Pair,
    find_images,
    find_pairs,
    find_test_splits,
    seeded_split,
    split_pairs,
)
from moss_tf.data.pool import (
    ImagePool,
    MemoryBudget,
    _bad,
    _summarise,
    load_images,
    load_pairs,
)
from moss_tf.data.rain import RainSynthesizer
from moss_tf.data.ranges import to_model_range
from moss_tf.data.stream import FileImages, ImageProbe, probe_images, scaled_size
from moss_tf.errors import ConfigError, DataError

__all__ = ["TrainingData", "build_test_sets", "build_training_data"]

log = logging.getLogger("moss_tf.data")

AUTOTUNE = tf.data.AUTOTUNE

#: Training images held in memory or read from their files; both have ``get(i)``.
ImageSource = ImagePool | FileImages

# Stream ids keep the random numbers of the streams (and test styles) apart.
_LABELED, _UNLABELED, _TEST_LABELED_STYLE, _TEST_TARGET_STYLE = 1, 2, 3, 4
_TEST_HOLDOUT_RAIN = 100  # seed style of the first data.holdout_rain split (then 101, ...)


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
    _rows: Callable[[tuple[int, int]], tuple] | None = field(default=None, repr=False)

    def rows(self, start: int, stop: int) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
        """(labeled, unlabeled) streams of rows ``start:stop`` of every global batch.

        Batch ``n`` of these streams equals ``batch[start:stop]`` of batch ``n``
        of :attr:`labeled` (and :attr:`unlabeled`), but the images of the
        other rows are never read: a worker of a cluster reads only its share.
        """
        return self._rows((start, stop))


# --------------------------------------------------------------------------- crops


def _crop_and_flip(images: list[tf.Tensor], crop: int, seed: tf.Tensor, with_top: bool = False):
    """The same random ``crop`` x ``crop`` window and horizontal flip for every image.

    Returns the crops, and with ``with_top`` also the window's first row.
    """
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
    return (out, top) if with_top else out


def _stream(
    count: int,
    make: Callable[[tf.Tensor, tf.Tensor], object],
    *,
    seed: int,
    stream: int,
    batch_size: int,
    start_step: int,
    rows: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Infinite dataset of ``make(image_index, element_seed)``, batched and prefetched.

    Images are visited in a seeded random order, each once per epoch. The
    first ``start_step`` batches are skipped before any image work is done.
    Every iterator of the dataset yields the same batches: the epoch orders
    are stateless permutations (a ``shuffle`` op would draw each new
    iterator's orders from a shared generator, and Keras's ``fit`` makes an
    extra iterator under a distribution strategy). With ``rows=(start,
    stop)`` only those rows of each batch are made (a worker's share).
    """
    base = tf.constant([seed, stream], dtype=tf.int64)

    def element(step, index):
        return make(index, tf.random.experimental.stateless_fold_in(base, step))

    order_seed = tf.constant([seed * 1000 + stream, 1], dtype=tf.int64)

    def epoch_order(epoch):
        epoch_seed = tf.random.experimental.stateless_fold_in(order_seed, epoch)
        indices = tf.range(count, dtype=tf.int64)
        shuffled = tf.random.experimental.stateless_shuffle(indices, epoch_seed)
        return tf.data.Dataset.from_tensor_slices(shuffled)

    indices = (
        tf.data.Dataset.counter().flat_map(epoch_order).enumerate().skip(start_step * batch_size)
    )
    start, stop = rows or (0, batch_size)
    if rows is not None:  # indices only: the dropped rows' images are never read

        def in_rows(step, index):
            row = step % batch_size
            return (row >= start) & (row < stop)

        indices = indices.filter(in_rows)
    return (
        indices.map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
        .batch(stop - start, drop_remainder=True)
        .prefetch(AUTOTUNE)
    )


def _on_service(dataset: tf.data.Dataset, address: str) -> tf.data.Dataset:
    """``dataset`` made by tf.data service workers (``data.service``) instead of locally.

    Sharding is off: each iteration is its own job and a worker makes the
    whole stream, so with one worker the batches are exactly the local ones.
    """
    protocol, _, host = address.rpartition("://")
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.OFF,
            service=f"{protocol or 'grpc'}://{host}",
        )
    )


def _to_unit(image_uint8: tf.Tensor) -> tf.Tensor:
    return tf.cast(image_uint8, tf.float32) / 255.0


# --------------------------------------------------------------------------- sources


class _Loader:
    """Resolves config paths and provides a build's training images, under one memory budget.

    ``min_side`` is the crop size: smaller training images are bad images.
    Each source is held in memory or streamed from its files as ``data.load``
    says (see :class:`~moss_tf.data.data_config.DataConfig`).
    """

    def __init__(self, cfg: DataConfig, min_side: int):
        self.cfg = cfg
        self.min_side = min_side
        self.budget = MemoryBudget(cfg.memory_limit_mb)
        self.streamed: list[str] = []  # sources read from their files, for the description

    @staticmethod
    def paths(value: str, key: str, builtin_names=builtin.LABELED_PHOTOS) -> list[Path]:
        """Image files of a folder or list (``key`` names it in errors), or built-in ones."""
        if value == BUILTIN:
            return builtin.builtin_paths(builtin_names)
        return find_images(resolve_path(value, key))

    def decode(self, paths: list[Path], what: str, *, gray: bool = False) -> ImagePool:
        """Decode training images (downscaled to ``data.max_side``) into a pool."""
        arrays, _ = load_images(
            paths,
            what=what,
            on_bad_image=self.cfg.on_bad_image,
            max_side=self.cfg.max_side,
            min_side=1 if gray else self.min_side,  # streak layers are mirrored to any size
            budget=self.budget,
            gray=gray,
        )
        return ImagePool(arrays)

    def images(self, paths: list[Path], what: str) -> ImagePool | FileImages:
        """Training images of one source, in memory or streamed (``data.load``)."""
        if self.cfg.load == "memory":
            return self.decode(paths, what)
        probes = probe_images(paths)
        if self.cfg.load == "auto" and self.budget.fits(self._nbytes(probes)):
            return self.decode(paths, what)
        return self._from_files(self._usable(probes, what), what)

    def pairs(self, pairs: list[Pair], what: str) -> tuple[ImageSource, ImageSource, tf.Tensor]:
        """(rainy images, clean images, clean index of each rainy image) of training pairs."""
        if self.cfg.load == "memory":
            return self.decode_pairs(pairs, what)
        clean_paths = list(dict.fromkeys(p.clean for p in pairs))
        clean_probes = dict(zip(clean_paths, probe_images(clean_paths), strict=True))
        rainy_probes = probe_images([p.rainy for p in pairs])
        nbytes = self._nbytes(rainy_probes) + self._nbytes(clean_probes.values())
        if self.cfg.load == "auto" and self.budget.fits(nbytes):
            return self.decode_pairs(pairs, what)
        rainy, clean_index, skipped = [], [], []
        clean_slot: dict[Path, int] = {}
        for pair, probe in zip(pairs, rainy_probes, strict=True):
            problem = self._pair_problem(probe, clean_probes[pair.clean])
            if problem is not None:
                _bad(problem, self.cfg.on_bad_image, skipped)
                continue
            rainy.append(probe)
            clean_index.append(clean_slot.setdefault(pair.clean, len(clean_slot)))
        _summarise(skipped, len(pairs), what)
        if not rainy:
            raise DataError(f"{what}: no usable pairs ({len(skipped)} skipped)")
        clean = [clean_probes[path] for path in clean_slot]
        return (
            self._from_files(rainy, what),
            FileImages(clean, self.cfg.max_side),
            tf.constant(clean_index, dtype=tf.int32),
        )

    def decode_pairs(self, pairs: list[Pair], what: str) -> tuple[ImagePool, ImagePool, tf.Tensor]:
        """(rainy pool, clean pool, clean index of each rainy image) of training pairs."""
        rainy, clean, clean_index, _ = load_pairs(
            pairs,
            what=what,
            on_bad_image=self.cfg.on_bad_image,
            max_side=self.cfg.max_side,
            min_side=self.min_side,
            budget=self.budget,
        )
        return ImagePool(rainy), ImagePool(clean), tf.constant(clean_index, dtype=tf.int32)

    def _nbytes(self, probes) -> int:
        """Bytes the decoded, downscaled RGB images of ``probes`` would take in memory."""
        sizes = (scaled_size(p.height, p.width, self.cfg.max_side) for p in probes)
        return sum(3 * h * w for h, w in sizes)

    def _too_small(self, probe: ImageProbe) -> str | None:
        h, w = scaled_size(probe.height, probe.width, self.cfg.max_side)
        if min(h, w) < self.min_side:
            return f"{probe.path}: {w}x{h} is smaller than the {self.min_side}x{self.min_side} crop"
        return None

    def _pair_problem(self, rainy: ImageProbe, clean: ImageProbe) -> str | None:
        problem = rainy.problem or clean.problem
        if problem is None and (rainy.height, rainy.width) != (clean.height, clean.width):
            problem = (
                f"{rainy.path} is {rainy.width}x{rainy.height} but its clean partner "
                f"{clean.path} is {clean.width}x{clean.height}"
            )
        return problem or self._too_small(rainy)

    def _usable(self, probes: list[ImageProbe], what: str) -> list[ImageProbe]:
        """The probes without problems, applying ``data.on_bad_image`` to the others."""
        kept, skipped = [], []
        for probe in probes:
            problem = probe.problem or self._too_small(probe)
            if problem is None:
                kept.append(probe)
            else:
                _bad(problem, self.cfg.on_bad_image, skipped)
        _summarise(skipped, len(probes), what)
        if not kept:
            raise DataError(f"{what}: no usable images ({len(skipped)} skipped)")
        return kept

    def _from_files(self, probes: list[ImageProbe], what: str) -> FileImages:
        self.streamed.append(what)
        return FileImages(probes, self.cfg.max_side)

    def synthesizer(self, rain: RainConfig, key: str) -> RainSynthesizer:
        """The rain of ``key``, with its streak layers decoded when it names some."""
        layers = None
        if rain.streaks is not None:
            paths = self.paths(rain.streaks, f"{key}.streaks")
            layers = self.decode(paths, f"{key}.streaks ({rain.streaks})", gray=True)
        return RainSynthesizer(rain, layers)


def _where(value: str) -> str:
    return "built-in photographs" if value == BUILTIN else value


def _rain_on_crop(pool: ImageSource, rain: RainSynthesizer, crop: int) -> Callable:
    """Element function: (rainy, clean) crops of image ``index``, float32 in [0, 1]."""

    def make(index, element_seed):
        crop_seed, rain_seed = tf.unstack(tf.random.experimental.stateless_split(element_seed))
        image = pool.get(index)
        (clean,), top = _crop_and_flip([image], crop, crop_seed, with_top=True)
        clean = _to_unit(clean)
        # Rain that depends on the row (accumulation) follows the photo's rows.
        return rain(clean, rain_seed, rows=(top, tf.shape(image)[0])), clean

    return make


def _holdout_split(loader: _Loader, cfg: DataConfig) -> tuple[list[Path], list[Path]]:
    """(held-out test images, training images) of ``data.labeled.clean``, by ``data.split_seed``."""
    paths = loader.paths(cfg.labeled.clean, "data.labeled.clean")
    return seeded_split(paths, cfg.labeled.holdout, cfg.split_seed)


def _labeled_source(
    loader: _Loader, cfg: DataConfig, crop: int
) -> tuple[Callable, int, list[Pair], str]:
    """(element function, image count, leftover pairs, description) of the labeled stream."""
    labeled = cfg.labeled
    if labeled.pairs is not None:
        source = resolve_path(labeled.pairs, "data.labeled.pairs")
        pairs, layout = find_pairs(source, cfg.on_bad_image)
        text = f"{len(pairs)} pairs from {source} ({layout})"
        rest: list[Pair] = []
        if labeled.fraction < 1.0:
            total = len(pairs)
            pairs, rest = split_pairs(pairs, labeled.fraction, cfg.split_seed)
            text = (
                f"{len(pairs)} of {total} pairs from {source} ({layout}; fraction "
                f"{labeled.fraction:g}, split_seed {cfg.split_seed})"
            )
        rainy_pool, clean_pool, clean_of = loader.pairs(pairs, "data.labeled.pairs")

        def make(index, element_seed):
            images = [rainy_pool.get(index), clean_pool.get(clean_of[index])]
            rainy, clean = _crop_and_flip(images, crop, element_seed)
            return to_model_range(rainy), to_model_range(clean)

        return make, len(rainy_pool), rest, text

    value = labeled.clean if labeled.clean is not None else BUILTIN
    paths = loader.paths(value, "data.labeled.clean")
    if labeled.holdout:
        held, paths = _holdout_split(loader, cfg)
        if not paths:
            raise DataError(
                f"data.labeled.holdout={labeled.holdout} leaves none of the {len(held)} "
                f"images of {value} for training"
            )
    extra = []
    for i, folder in enumerate(labeled.extra_clean):
        extra += loader.paths(folder, f"data.labeled.extra_clean[{i}]")
    pool = loader.images(paths + extra, f"data.labeled.clean ({value})")
    rainy_clean = _rain_on_crop(pool, loader.synthesizer(labeled.rain, "data.labeled.rain"), crop)

    def make(index, element_seed):
        rainy, clean = rainy_clean(index, element_seed)
        return to_model_range(rainy), to_model_range(clean)

    where = _where(value) + "".join(f" + {folder}" for folder in labeled.extra_clean)
    text = f"{len(pool)} clean images from {where} + rain ({labeled.rain.preset} preset)"
    return make, len(pool), [], text


def _unlabeled_source(
    loader: _Loader, cfg: DataConfig, rest: list[Pair], crop: int
) -> tuple[Callable, int, str]:
    """(element function, image count, description) of the unlabeled stream."""
    unlabeled = cfg.unlabeled
    synthetic = unlabeled.clean
    if synthetic is None and unlabeled.rainy is None and not rest and cfg.labeled.is_builtin:
        synthetic = BUILTIN
    if synthetic is not None:
        paths = loader.paths(synthetic, "data.unlabeled.clean", builtin.UNLABELED_PHOTOS)
        excluded = ""
        if cfg.labeled.holdout and synthetic != BUILTIN:
            # The test images never reach training, not even rainy and unlabeled.
            held = {path.resolve() for path in _holdout_split(loader, cfg)[0]}
            kept = [path for path in paths if path.resolve() not in held]
            if len(kept) < len(paths):
                excluded = f", the {len(paths) - len(kept)} held-out test images left out"
            paths = kept
        pool = loader.images(paths, f"data.unlabeled.clean ({synthetic})")
        rain = loader.synthesizer(unlabeled.rain, "data.unlabeled.rain")
        rainy_clean = _rain_on_crop(pool, rain, crop)

        def make(index, element_seed):
            rainy, _ = rainy_clean(index, element_seed)  # the clean crop is never shown
            return to_model_range(rainy)

        text = (
            f"{len(pool)} clean images from {_where(synthetic)} "
            f"+ rain ({unlabeled.rain.preset} preset){excluded}"
        )
        return make, len(pool), text

    paths = [p.rainy for p in rest]
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
    pool = loader.images(paths, "unlabeled images")

    def make(index, element_seed):
        (rainy,) = _crop_and_flip([pool.get(index)], crop, element_seed)
        return to_model_range(rainy)

    text = " + ".join(parts) + (f" ({len(pool)} usable)" if len(pool) != len(paths) else "")
    return make, len(pool), text


def _within_pixel_limit(build: Callable) -> Callable:
    """``build(data_cfg, ...)`` run with images over ``data_cfg.max_pixels`` refused."""

    @functools.wraps(build)
    def wrapped(data_cfg: DataConfig, *args, **kwargs):
        with pixel_limit(data_cfg.max_pixels):
            return build(data_cfg, *args, **kwargs)

    return wrapped


@_within_pixel_limit
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

    Images are decoded once and kept in memory, or read from their files per
    crop when a source is too large for ``data.memory_limit_mb`` (see
    ``data.load``); each element is a random ``crop_size`` crop (same window
    and horizontal flip for rainy and clean), with rain synthesised on the
    crop when the config asks for it. Both ways give the same crops for the
    same seed (except for unpaired images above ``data.max_side``, see
    :mod:`moss_tf.data.stream`).

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
    loader = _Loader(data_cfg, min_side=crop_size)
    stream = {"seed": seed, "batch_size": batch_size, "start_step": start_step}
    make_labeled, num_labeled, rest, text = _labeled_source(loader, data_cfg, crop_size)
    descriptions = [f"labeled: {text}"]
    make_unlabeled, num_unlabeled = None, 0
    if with_unlabeled:
        make_unlabeled, num_unlabeled, text = _unlabeled_source(loader, data_cfg, rest, crop_size)
        descriptions.append(f"unlabeled: {text}")

    def streams(rows: tuple[int, int] | None = None) -> tuple:
        labeled = _stream(num_labeled, make_labeled, stream=_LABELED, rows=rows, **stream)
        unlabeled = None
        if make_unlabeled is not None:
            unlabeled = _stream(
                num_unlabeled, make_unlabeled, stream=_UNLABELED, rows=rows, **stream
            )
        if data_cfg.service is not None:
            labeled = _on_service(labeled, data_cfg.service)
            unlabeled = None if unlabeled is None else _on_service(unlabeled, data_cfg.service)
        return labeled, unlabeled

    if loader.streamed:
        where = ", ".join(loader.streamed)
        descriptions.append(f"streamed from their files (data.load={data_cfg.load}): {where}")
    if data_cfg.service is not None:
        descriptions.append(f"made by the tf.data service at {data_cfg.service}")
    description = "\n".join(descriptions)
    log.info("training data:\n%s", description)
    return TrainingData(*streams(), num_labeled, num_unlabeled, description, streams)


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


def _load_test_split(pairs: list[Pair], what: str, on_bad_image: str) -> tf.data.Dataset:
    """A finite dataset of test ``pairs``, full size, in their order."""
    rainy, clean, clean_index, kept = load_pairs(pairs, what=what, on_bad_image=on_bad_image)
    names = [p.name for p in kept]
    return _pairs_dataset(ImagePool(rainy), ImagePool(clean), clean_index, names)


def _training_sources(cfg: DataConfig) -> dict[str, Path]:
    """Config key -> resolved folder or list of each training source that exists on disk."""
    values = {
        "data.labeled.pairs": cfg.labeled.pairs,
        "data.labeled.clean": cfg.labeled.clean,
        "data.unlabeled.rainy": cfg.unlabeled.rainy,
        "data.unlabeled.clean": cfg.unlabeled.clean,
    }
    values.update(
        {f"data.labeled.extra_clean[{i}]": v for i, v in enumerate(cfg.labeled.extra_clean)}
    )
    sources = {}
    for key, value in values.items():
        if value is None or value == BUILTIN:
            continue
        try:
            sources[key] = resolve_path(value, key)
        except ConfigError:
            continue  # a missing training source is reported by the training build
    return sources


def _check_never_trained_on(source: Path, key: str, cfg: DataConfig) -> None:
    """DataError when validation ``source`` is, holds or lies in a training source."""
    for train_key, train_source in _training_sources(cfg).items():
        if (
            source == train_source
            or train_source in source.parents
            or source in train_source.parents
        ):
            raise DataError(
                f"{key}: {source} overlaps the training source {train_key} ({train_source}); "
                "validation pairs must never be trained on"
            )


def _validation_splits(cfg: DataConfig, taken: set[str]) -> dict[str, tf.data.Dataset]:
    """The ``data.validation`` splits: one per name, all the pairs of its folder or list."""
    sets = {}
    for name, value in cfg.validation.items():
        key = f"data.validation.{name}"
        if name in taken:
            raise DataError(f"{key}: the split name {name!r} is already a split of data.test")
        source = resolve_path(value, key)
        _check_never_trained_on(source, key, cfg)
        pairs, _ = find_pairs(source, cfg.on_bad_image)
        sets[name] = _load_test_split(pairs, f"{key} ({source})", cfg.on_bad_image)
    return sets


@_within_pixel_limit
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
        * then one split per ``data.validation`` name (rain made by others,
          for choosing checkpoints and recipes).

    Raises:
        ConfigError, DataError, ImageError: as for the training data; also a
        DataError when a ``data.validation`` folder overlaps a training source.
    """
    sets = _held_out_sets(data_cfg)
    sets.update(_validation_splits(data_cfg, set(sets)))
    return sets


def _held_out_sets(data_cfg: DataConfig) -> dict[str, tf.data.Dataset]:
    """The splits of ``data.test``, or those synthesised on the held-out images."""
    cfg = data_cfg
    loader = _Loader(cfg, min_side=1)
    if cfg.test is not None:
        source = resolve_path(cfg.test, "data.test")
        return {
            name: _load_test_split(pairs, f"data.test ({source})", cfg.on_bad_image)
            for name, pairs in find_test_splits(source, cfg.on_bad_image).items()
        }

    if cfg.labeled.is_builtin:
        clean, names = builtin.builtin_test_tiles()
        with_target = True
    elif cfg.labeled.clean is not None and cfg.labeled.holdout:
        held, _ = _holdout_split(loader, cfg)
        # Full size, like any test set: no max_side, no minimum size.
        clean, kept = load_images(held, what="data.labeled.holdout", on_bad_image=cfg.on_bad_image)
        names = [p.stem for p in kept]
        with_target = cfg.unlabeled.clean is not None
    elif cfg.validation:
        return {}  # the data.validation splits are the test sets
    else:
        raise DataError(
            "no test set: set data.test=PATH (a folder in any paired layout), or "
            "data.labeled.holdout=N to hold out N of the data.labeled.clean images, "
            "or data.validation.NAME=PATH"
        )
    # Every labeled_style image gets rain: one left clean (clean_probability)
    # would make the split's rainy-input PSNR infinite; the ``none`` split of
    # data.holdout_rain scores rain-free photos.
    always_rained = dataclasses.replace(cfg.labeled.rain, clean_probability=0.0)
    sets = {
        "labeled_style": _synthetic_split(
            clean,
            names,
            loader.synthesizer(always_rained, "data.labeled.rain"),
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
    for index, (split, rain) in enumerate(cfg.holdout_rain.items()):
        synthesizer = (
            _no_rain if rain is None else loader.synthesizer(rain, f"data.holdout_rain.{split}")
        )
        seed_style = _TEST_HOLDOUT_RAIN + index
        sets[split] = _synthetic_split(clean, names, synthesizer, cfg.split_seed, seed_style)
    return sets


def _no_rain(clean, seed):
    """The rain of a ``null`` ``data.holdout_rain`` split: none."""
    return clean
