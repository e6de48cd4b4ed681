"""The SavedModel under hostile input, and served results equal to the command line's.

Issue 31: decompression bombs and huge arrays killed the serving process,
``derain_bytes`` decoded JPEG differently from the command line and NaN
input came back as all-NaN. A tiny network stands in for the shipped one
(what is tested is the decoding, the limits and the tiling, not the
weights); ``bench/bench_serving_limits.py`` measures the shipped model.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, SHARED, TINY_MODEL
from PIL import Image
from test_export import randomize

from bench.bench_serving_limits import zero_png
from moss_tf.commands import export as export_command
from moss_tf.config import config_from_dict, save_config
from moss_tf.data import from_model_range, to_model_range
from moss_tf.data import images as image_files
from moss_tf.export import saved_model as export
from moss_tf.export.decode import decode_image, rgb_uint8
from moss_tf.export.tiles import graph_owned_ranges, graph_tile_starts, reflect_indices
from moss_tf.infer.derain import Derainer, owned_ranges, tile_starts
from moss_tf.nn.network import MOSSNet

TILE, OVERLAP = 64, 16
LIMIT = 1024 * 1024


def tiny_net() -> MOSSNet:
    """Random weights; memory_decay 0.5 so the photo's memory update visibly matters."""
    net = MOSSNet(**TINY_MODEL, memory_decay=0.5)
    net.build()
    return randomize(net, seed=4)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(net, version folder, loaded SavedModel)``: exported through the command line."""
    root = tmp_path_factory.mktemp("robust")
    net = tiny_net()
    run_dir = root / "run"
    run_dir.mkdir()
    model = {**TINY_MODEL, "memory_decay": 0.5}
    save_config(config_from_dict({"name": "tiny", "model": model}), run_dir / "config.yaml")
    net.save_weights(run_dir / "model.weights.h5")
    options = ["--max-pixels", str(LIMIT), "--tile-size", str(TILE), "--overlap", str(OVERLAP)]
    base = root / "moss"
    assert export_command.main(["--run-dir", str(run_dir), "--output", str(base), *options]) == 0
    return net, base / "1", tf.saved_model.load(str(base / "1"))


def encode(array, fmt, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rainy_array(height, width, seed=0) -> np.ndarray:
    """Smooth colours with streaks and noise: JPEG-like content, not pure noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], -1) * 200
    streaks = 40.0 * ((xx + yy // 4) % 17 == 0)[..., None]
    noise = rng.normal(0, 8, (height, width, 3))
    return np.clip(base + streaks + noise, 0, 255).astype(np.uint8)


def command_line(net, path) -> np.ndarray:
    """What ``python evaluate.py --input`` computes for a file (before saving it)."""
    derainer = Derainer(net, tile_size=TILE, overlap=OVERLAP)
    return derainer.derain_uint8(image_files.read_image(path))


def serve_bytes(loaded, data: bytes) -> np.ndarray:
    reply = loaded.signatures["derain_bytes"](image_bytes=tf.constant([data]))
    return tf.io.decode_png(reply["derained_bytes"][0]).numpy()


# ------------------------------------------------------------------ equal to the command line


def test_a_rotated_jpeg_is_served_as_the_command_line_derains_it(served, tmp_path):
    net, _, loaded = served
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the command line turns it upright
    data = encode(rainy_array(75, 110), "JPEG", quality=85, exif=exif.tobytes())
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    want = command_line(net, path)
    got = serve_bytes(loaded, data)
    assert want.shape == (110, 75, 3)  # tiled (110 > 32), upright
    assert got.shape == want.shape
    diff = np.abs(got.astype(int) - want)
    # Decoding with TensorFlow's default (fast) DCT instead gives several levels here.
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


@pytest.mark.parametrize("name", ["1.jpg", "2.jpg", "8.jpg"])
def test_real_rainy_photos_are_served_as_the_command_line_derains_them(served, name):
    path = SHARED / "data" / "sirr_real_rainy" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the real rainy photos live in ../shared)")
    net, _, loaded = served
    want = command_line(net, path)
    got = serve_bytes(loaded, path.read_bytes())
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want).max() <= 1


def test_serving_default_tiles_a_large_image_as_the_command_line(served):
    net, _, loaded = served
    images = np.random.default_rng(5).random((2, 70, 45, 3), dtype=np.float32)
    got = loaded.signatures["serving_default"](images=tf.constant(images))["derained"].numpy()
    derainer = Derainer(net, tile_size=TILE, overlap=OVERLAP)
    for image, result in zip(images, got, strict=True):
        want = from_model_range(derainer.derain_model_range(to_model_range(image))).numpy()
        np.testing.assert_allclose(result, want, atol=1e-5)
    # Tiling matters here: the network on the whole image is another result.
    whole = from_model_range(net(to_model_range(images[:1]), training=False)).numpy()[0]
    assert np.abs(whole - got[0]).max() > 1e-3
    empty = loaded.signatures["serving_default"](images=tf.zeros([0, 8, 8, 3]))["derained"]
    assert empty.shape == (0, 8, 8, 3)


def _pillow_png(image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _oriented(fmt, orientation, big_endian):
    exif = Image.Exif()
    if big_endian:
        exif.endian = ">"
    exif[0x0112] = orientation
    return encode(rainy_array(9, 14, seed=orientation), fmt, exif=exif.tobytes())


def _decode_cases():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (9, 14, 4), dtype=np.uint8)
    photo = rainy_array(9, 14)
    return {
        "png rgba": encode(rgba, "PNG"),
        "png gray+alpha": _pillow_png(Image.fromarray(rgba, "RGBA").convert("LA")),
        "png palette+transparency": _pillow_png(
            Image.fromarray(rgba[..., :3]).convert("P"), transparency=3
        ),
        "png gray16": _pillow_png(Image.fromarray(rng.integers(0, 65536, (9, 14), np.uint16))),
        "png rgb16": tf.io.encode_png(rng.integers(0, 65536, (9, 14, 3), np.uint16)).numpy(),
        "jpeg gray": encode(photo[..., 0], "JPEG"),
        "jpeg cmyk": _jpeg_cmyk(photo),
        "bmp rgb": encode(photo, "BMP"),
        **{f"jpeg orientation {o}": _oriented("JPEG", o, o % 2) for o in (2, 3, 5, 6, 7, 8)},
        **{f"png orientation {o}": _oriented("PNG", o, o % 2 == 0) for o in (4, 6, 8)},
    }


def _jpeg_cmyk(photo) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo).convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()


DECODE_CASES = _decode_cases()


@pytest.mark.parametrize("case", sorted(DECODE_CASES))
def test_files_decode_in_the_graph_as_the_command_line_reads_them(case, tmp_path):
    data = DECODE_CASES[case]
    path = tmp_path / ("file." + case.split()[0])
    path.write_bytes(data)
    got = rgb_uint8(decode_image(tf.constant(data), LIMIT)).numpy()
    want = image_files.read_image(path)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_the_graph_tiles_are_the_command_lines():
    for length in range(4, 1300, 4):
        for tile, overlap, multiple in [(32, 8, 4), (512, 64, 8), (96, 40, 8)]:
            if length % multiple:
                continue
            want = tile_starts(length, tile, overlap, multiple)
            got = graph_tile_starts(length, tile, overlap, multiple).numpy().tolist()
            assert got == want, (length, tile)
            size = min(length, tile)
            owned = graph_owned_ranges(tf.constant(want), size, length, multiple).numpy()
            assert owned.tolist() == [list(r) for r in owned_ranges(want, size, length, multiple)]
    for length in range(1, 12):
        for pad in range(8):
            wanted = np.pad(np.arange(length), (0, pad), mode="reflect")
            got = reflect_indices(tf.range(length + pad), length).numpy()
            np.testing.assert_array_equal(got, wanted)


# ------------------------------------------------------------------ refused with a clear error


def test_images_over_the_pixel_limit_are_refused_naming_size_and_limit(served):
    _, _, loaded = served
    bomb = zero_png(4096)  # 49 kB that decode to 50 MB
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"4096x4096 .* limit of {LIMIT}"):
        loaded.signatures["derain_bytes"](image_bytes=tf.constant([bomb]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"1025x1024 .* limit of {LIMIT}"):
        loaded.signatures["serving_default"](images=tf.zeros([1, 1024, 1025, 3]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_images_are_refused(served, bad):
    _, _, loaded = served
    images = np.zeros((2, 16, 16, 3), np.float32)
    images[1, 3, 4, 2] = bad
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="serving_default: `images` must be finite"
    ):
        loaded.signatures["serving_default"](images=tf.constant(images))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a" + bytes(40), "GIF is not accepted"),
        (b"%PDF-1.4 not an image", "not a PNG, JPEG or BMP file"),
    ],
)
def test_other_files_are_refused_naming_the_formats(served, data, message):
    _, _, loaded = served
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"derain_bytes: {message}"):
        loaded.signatures["derain_bytes"](image_bytes=tf.constant([data]))


def test_the_default_limit_is_the_command_lines(monkeypatch):
    net = tiny_net()
    assert export.ServingModule(net).max_pixels == image_files.MAX_PIXELS
    monkeypatch.setattr(image_files, "MAX_PIXELS", 1234)  # read when exporting, not importing
    assert export.ServingModule(net).max_pixels == 1234
    with pytest.raises(export.MossError, match="max_pixels must be a positive"):
        export.ServingModule(net, max_pixels=0)


# ------------------------------------------------------------------ bombs in a capped process

_CHILD = r"""
import json, sys
import tensorflow as tf
from bench.bench_serving_limits import peak_rss_mb, zero_png

def rss():  # this process's own high-water mark (not getrusage's: see peak_rss_mb)
    return peak_rss_mb() * 2**20

loaded = tf.saved_model.load(sys.argv[1])
by_bytes, by_array = loaded.signatures["derain_bytes"], loaded.signatures["serving_default"]
small = zero_png(64)
by_bytes(image_bytes=tf.constant([small]))
report = {}
# First the largest accepted image (rss() is a high-water mark).
side = int(sys.argv[2])
before = rss()
out = by_bytes(image_bytes=tf.constant([zero_png(side)]))["derained_bytes"]
report["large_shape"] = list(tf.io.decode_png(out[0]).shape)
report["large_rss_increase"] = rss() - before
forged = bytearray(small)
forged[16:24] = (16384).to_bytes(4, "big") * 2  # a 16384 x 16384 header on 64 x 64 data
cases = {
    "png-4096": lambda: by_bytes(image_bytes=tf.constant([zero_png(4096)])),
    "png-16384": lambda: by_bytes(image_bytes=tf.constant([bytes(forged)])),
    "array-4096": lambda: by_array(images=tf.zeros([1, 4096, 4096, 3])),
}
for name, call in cases.items():
    try:
        call()
        report[name] = "accepted"
    except tf.errors.InvalidArgumentError as err:
        report[name] = err.message
report["peak_rss"] = rss()
print(json.dumps(report))
"""


def test_bombs_are_refused_and_large_images_stay_in_bounded_memory(served):
    """In a process capped at 8 GiB of address space: bombs get a clear error, the
    process lives, and the largest accepted image costs memory by its pixels, not by
    the network's activations over it."""
    _, version, _ = served
    prlimit = shutil.which("prlimit")
    cap = [prlimit, f"--as={8 << 30}"] if prlimit else []
    side = 1024  # exactly the limit
    done = subprocess.run(
        [*cap, sys.executable, "-c", _CHILD, str(version), str(side)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    limit = f"more than the limit of {LIMIT} pixels"
    assert "4096x4096 = 16777216 pixels" in report["png-4096"] and limit in report["png-4096"]
    assert "16384x16384 = 268435456 pixels" in report["png-16384"]
    assert "a 4096x4096 image has 16777216 pixels" in report["array-4096"]
    assert report["large_shape"] == [side, side, 3]
    # Tiled: the decoded input, the output, its PNG and a band of float sums,
    # under 40 bytes a pixel (measured: 15 MB for 1024^2). The tiny network
    # on the whole image adds 97 MB.
    assert report["large_rss_increase"] < 40 * side * side, report
    assert report["peak_rss"] < 2 << 30, report
