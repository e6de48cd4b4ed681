"""Training images streamed from files (data.load): the same crops as in memory, bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moss_tf.config import config_from_dict
from moss_tf.data import ImageError, build_training_data, read_image
from moss_tf.data.stream import FileImages, probe_images
from moss_tf.errors import ConfigError


def _data(**values):
    return config_from_dict({"data": values}).data


def _pairs(root: Path, count: int, size=(40, 48), rainy_ext="png", seed=0, smooth=False) -> Path:
    """rain/ + norain/ pairs of random (or smooth) images; rainy files saved as ``rainy_ext``."""
    rng = np.random.default_rng(seed)
    (root / "rain").mkdir(parents=True)
    (root / "norain").mkdir()
    for n in range(count):
        clean = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        if smooth:  # like a photo, whose downscaling filters hardly matter
            rows, cols = np.mgrid[: size[0], : size[1]]
            clean = (127.5 + 100 * np.sin(rows / 9.0 + cols / 13.0 + n))[..., None]
            clean = np.repeat(clean.astype(np.uint8), 3, axis=-1)
        Image.fromarray(clean).save(root / "norain" / f"{n}.png")
        Image.fromarray(255 - clean).save(root / "rain" / f"{n}.{rainy_ext}", quality=90)
    return root


def _first_batches(cfg, batches=3, **kwargs):
    """(TrainingData, per stream an array of its first batches; pairs joined on channels)."""
    data = build_training_data(cfg, batch_size=4, crop_size=16, seed=3, **kwargs)
    streams = [data.labeled] + ([data.unlabeled] if data.unlabeled is not None else [])
    return data, [np.stack([_joined(b) for b in s.take(batches)]) for s in streams]


def _assert_resumes_at_step_2(cfg, first_batches) -> None:
    """A stream started at step 2 yields the labeled batch ``_first_batches`` saw third."""
    resumed = build_training_data(
        cfg, batch_size=4, crop_size=16, seed=3, with_unlabeled=False, start_step=2
    )
    rainy, clean = next(iter(resumed.labeled))
    np.testing.assert_array_equal(np.concatenate([rainy, clean], -1), first_batches[2])


def _joined(batch) -> np.ndarray:
    return np.concatenate(batch, -1) if isinstance(batch, tuple) else batch.numpy()


def test_streamed_batches_equal_in_memory_batches_for_the_same_seed(tmp_path):
    # PNG and JPEG pairs, the rest of a labeled fraction and real rainy photos
    # as the unlabeled set: every kind of file source.
    pairs = _pairs(tmp_path / "set", 6, rainy_ext="jpg")
    common = {
        "labeled": {"pairs": str(pairs), "fraction": 0.5},
        "unlabeled": {"rainy": str(pairs / "rain")},
    }
    _, memory = _first_batches(_data(**common, load="memory"), with_unlabeled=True)
    data, streamed = _first_batches(_data(**common, load="stream"), with_unlabeled=True)
    assert "streamed from their files (data.load=stream)" in data.description
    for in_memory, from_files in zip(memory, streamed, strict=True):
        np.testing.assert_array_equal(in_memory, from_files)
    _assert_resumes_at_step_2(_data(**common, load="stream"), streamed[0])


def test_auto_streams_only_the_sources_that_do_not_fit(tmp_path):
    big = _pairs(tmp_path / "big", 8, size=(256, 256))  # 3 MiB decoded
    small = _pairs(tmp_path / "small", 2, seed=1)
    cfg = _data(
        labeled={"pairs": str(big)}, unlabeled={"rainy": str(small / "rain")}, memory_limit_mb=1
    )
    data = build_training_data(cfg, batch_size=2, crop_size=16, seed=0, with_unlabeled=True)
    assert "streamed from their files (data.load=auto): data.labeled.pairs" in data.description
    assert "unlabeled images" not in data.description.splitlines()[-1]


def _save_variants(folder: Path) -> list[Path]:
    """Image files in every mode the graph decoders read, including EXIF-rotated JPEGs."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    folder.mkdir()
    images = {
        "rgb.png": Image.fromarray(rgb),
        "gray.png": Image.fromarray(rgb[..., 0]),
        "rgba.png": Image.fromarray(np.dstack([rgb, alpha])),
        "la.png": Image.fromarray(np.dstack([rgb[..., 0], alpha])).convert("LA"),
        "palette.png": Image.fromarray(rgb).quantize(16),
        "bits.png": Image.fromarray(rgb[..., 0] > 128),
        "rgb.bmp": Image.fromarray(rgb),
        "palette.gif": Image.fromarray(rgb).quantize(16),
        "gray.jpg": Image.fromarray(rgb[..., 0]),
    }
    transparent = Image.fromarray(rgb).quantize(16)
    transparent.info["transparency"] = 3
    images["palette_transparent.png"] = transparent
    paths = []
    for name, image in images.items():
        image.save(folder / name)
        paths.append(folder / name)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = folder / f"orientation{orientation}.jpg"
        Image.fromarray(rgb).save(path, exif=exif, quality=95)
        paths.append(path)
    return paths


def test_graph_decoding_equals_read_image_in_every_readable_mode(tmp_path):
    paths = _save_variants(tmp_path / "images")
    probes = probe_images(paths)
    assert [p.problem for p in probes] == [None] * len(paths)
    images = FileImages(probes, max_side=None)
    for index, path in enumerate(paths):
        expected = read_image(path)
        got = images.get(index).numpy()
        assert got.shape == expected.shape, path.name
        np.testing.assert_array_equal(got, expected, err_msg=path.name)


def test_pairs_above_max_side_are_downscaled_identically_unpaired_ones_nearly(tmp_path):
    pairs = _pairs(tmp_path / "set", 2, size=(96, 80), rainy_ext="jpg", smooth=True)
    common = {
        "labeled": {"pairs": str(pairs)},
        "unlabeled": {"rainy": str(pairs / "rain")},
        "max_side": 64,
    }
    _, (labeled_memory, unlabeled_memory) = _first_batches(
        _data(**common, load="memory"), with_unlabeled=True
    )
    _, (labeled_stream, unlabeled_stream) = _first_batches(
        _data(**common, load="stream"), with_unlabeled=True
    )
    np.testing.assert_array_equal(labeled_memory, labeled_stream)
    # Unpaired JPEGs: Pillow decodes at reduced scale then box-filters, the
    # graph area-averages the full image: same crops, slightly different pixels.
    difference = np.abs(unlabeled_memory - unlabeled_stream) * 127.5  # grey levels
    assert 0 < difference.mean() < 4


def test_files_the_graph_cannot_read_are_named_up_front(tmp_path, caplog):
    pairs = _pairs(tmp_path / "set", 3)
    deep = np.full((40, 48), 40000, dtype=np.uint16)
    Image.fromarray(deep).save(pairs / "rain" / "1.png")  # 16-bit: refused with advice
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(pairs / "rain" / "2.png")  # size
    with pytest.raises(ImageError, match=r"1\.png: PNG in mode I;16 .* data\.load=memory"):
        build_training_data(
            _data(labeled={"pairs": str(pairs)}, load="stream"),
            batch_size=1,
            crop_size=16,
            seed=0,
            with_unlabeled=False,
        )
    data = build_training_data(
        _data(labeled={"pairs": str(pairs)}, load="stream", on_bad_image="skip"),
        batch_size=1,
        crop_size=16,
        seed=0,
        with_unlabeled=False,
    )
    assert data.num_labeled == 1
    assert "2.png is 40x40 but its clean partner" in caplog.text
    assert "skipped 2 of 3" in caplog.text


def test_unknown_load_mode_names_the_key():
    with pytest.raises(ConfigError, match=r"data.load: must be one of auto, memory, stream"):
        _data(load="disk")


def _resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _growth_mb(cfg) -> float:
    """Resident memory added by building ``cfg``'s stream and taking 5 batches from it."""
    before = _resident_mb()
    data = build_training_data(cfg, batch_size=8, crop_size=64, seed=0, with_unlabeled=False)
    for _ in data.labeled.take(5):
        pass
    return _resident_mb() - before


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_streaming_memory_does_not_hold_the_dataset(tmp_path):
    # 120 JPEG + 120 PNG images of 384 x 512: 135 MiB decoded, which memory mode holds.
    pairs = _pairs(tmp_path / "set", 120, size=(384, 512), rainy_ext="jpg", smooth=True)
    decoded_mb = 120 * 2 * 384 * 512 * 3 / 2**20
    # A tenth of the set measures what streaming costs whatever the set's size
    # (the pipeline, its buffers; about 40 MiB here, so a fixed bound is too tight).
    tenth = _pairs(tmp_path / "tenth", 12, size=(384, 512), rainy_ext="jpg", smooth=True)
    # Each in a fresh process: memory freed by earlier tests stays with the
    # allocator, and a build reusing it shows less growth than it holds.
    in_memory, streamed = (_growth_in_new_process(pairs, load) for load in ("memory", "stream"))
    streamed_tenth = _growth_in_new_process(tenth, "stream")
    assert 0.9 * decoded_mb < in_memory, in_memory
    # Ten times the images, and streaming holds at most a tenth of them more.
    assert streamed - streamed_tenth < 0.1 * decoded_mb, (streamed, streamed_tenth)


def _growth_in_new_process(pairs: Path, load: str) -> float:
    """:func:`_growth_mb` of a labeled ``pairs`` folder, measured in a new Python process."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_data_stream import _data, _growth_mb\n"
        f"print(_growth_mb(_data(labeled={{'pairs': {str(pairs)!r}}}, load={load!r})))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.split()[-1])


@pytest.fixture
def data_service():
    """A tf.data service dispatcher and one worker on loopback; stopped afterwards."""
    import tensorflow as tf

    service = tf.data.experimental.service
    dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
    address = dispatcher.target.split("://")[1]
    worker = service.WorkerServer(service.WorkerConfig(dispatcher_address=address))
    try:
        yield address
    finally:
        worker._stop()  # the servers' only stop method (TensorFlow's own tests use it)
        dispatcher._stop()


def test_tf_data_service_makes_the_local_batches(tmp_path, data_service):
    pairs = _pairs(tmp_path / "set", 4, rainy_ext="jpg")
    common = {"labeled": {"pairs": str(pairs), "fraction": 0.5}, "load": "stream"}
    _, local = _first_batches(_data(**common), with_unlabeled=True)
    data, served = _first_batches(_data(**common, service=data_service), with_unlabeled=True)
    assert f"made by the tf.data service at {data_service}" in data.description
    for a, b in zip(local, served, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_malformed_service_address_names_the_key():
    with pytest.raises(ConfigError, match=r"data.service: must be host:port"):
        _data(service="localhost")
