"""Deraining photos: tiles blend without seams, files keep their format, size and orientation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import TINY_MODEL
from PIL import Image

from moss_tf.data import read_image
from moss_tf.errors import MossError
from moss_tf.infer.derain import Derainer, blend_window, derain_files, tile_starts
from moss_tf.nn.network import MOSSNet

TILE, OVERLAP = 96, 32


@pytest.fixture(scope="module")
def net():
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    model = MOSSNet(**TINY_MODEL)
    model.build()
    # The CBN fusions start as zeros and unit statistics; give them values so
    # every path of the network shapes the output (other weights keep their
    # initialisation, whose feature scale is that of a trained network).
    for variable in model.weights:
        if "fuse" in variable.path and "alpha" not in variable.path:
            low = 0.5 if "variance" in variable.path else -0.2
            variable.assign(rng.uniform(low, low + 1.0 if low > 0 else 0.2, variable.shape))
    return model


def textured(height, width, seed=0):
    """A smooth pattern with noise, float32 [H, W, 3] in [-1, 1]."""
    yy, xx = np.mgrid[:height, :width]
    base = 0.6 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    noise = np.random.default_rng(seed).normal(0.0, 0.1, (height, width, 3))
    return np.clip(base[..., None] + noise, -1, 1).astype(np.float32)


def test_tiles_cover_the_image_with_the_requested_overlap():
    for length, tile, overlap in [(50, 96, 32), (97, 96, 32), (200, 96, 32), (4000, 512, 64)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + min(tile, length) == length
        assert np.all(np.diff(starts) <= tile - overlap)  # neighbours share >= overlap pixels
    ramp = blend_window(TILE, OVERLAP, rise=True, fall=True)
    assert ramp.min() > 0 and ramp.max() == 1.0 and np.all(np.diff(ramp[:OVERLAP]) > 0)


def _seam_distance(height, width):
    """Per pixel, the distance to the nearest tile edge that lies inside the image."""
    rows, cols = tile_starts(height, TILE, OVERLAP), tile_starts(width, TILE, OVERLAP)
    edges_y = {r for r in rows if r > 0} | {r + TILE for r in rows if r + TILE < height}
    edges_x = {c for c in cols if c > 0} | {c + TILE for c in cols if c + TILE < width}
    yy, xx = np.mgrid[:height, :width]
    dy = np.min(np.abs(yy[..., None] - np.array(sorted(edges_y))), axis=-1)
    dx = np.min(np.abs(xx[..., None] - np.array(sorted(edges_x))), axis=-1)
    return np.minimum(dy, dx), sorted(edges_y), sorted(edges_x)


def _seam_jump(image, columns):
    """Mean absolute horizontal step between columns c-1 and c, over the given columns."""
    return float(np.mean([np.abs(image[:, c] - image[:, c - 1]).mean() for c in columns]))


def test_tiled_equals_untiled_away_from_seams_and_shows_no_seams(net):
    # Sides that are multiples of the network's size multiple (4 here), so the
    # whole image needs no internal padding either and only seams differ.
    height, width = 200, 152
    rainy = textured(height, width)
    whole = Derainer(net, tile_size=1024).derain_model_range(rainy)
    tiled = Derainer(net, tile_size=TILE, overlap=OVERLAP).derain_model_range(rainy)
    assert tiled.shape == whole.shape == rainy.shape

    distance, seam_rows, seam_columns = _seam_distance(height, width)
    error = np.abs(tiled - whole).max(axis=-1)
    # 24 pixels: this network's effective reach; a tile sees the same context there.
    assert error[distance >= 24].max() < 1e-5
    assert error.mean() < 1e-3

    # No seams: stepping across a tile edge changes the tiled output no more
    # than it changes the untiled one, while naive stitching visibly jumps.
    assert _seam_jump(tiled, seam_columns) < 1.05 * _seam_jump(whole, seam_columns) + 1e-3
    flip = (1, 0, 2)  # rows as columns
    rows_tiled, rows_whole = tiled.transpose(flip), whole.transpose(flip)
    assert _seam_jump(rows_tiled, seam_rows) < 1.05 * _seam_jump(rows_whole, seam_rows) + 1e-3
    naive = whole.copy()
    alone = Derainer(net, tile_size=1024)
    for left in (0, 76):  # two non-overlapping tiles, each derained alone
        naive[:, left : left + 76] = alone.derain_model_range(rainy[:, left : left + 76])
    assert _seam_jump(naive, [76]) > 1.5 * _seam_jump(whole, [76])


def test_small_images_go_through_whole(net):
    rainy = textured(37, 53, seed=1)
    got = Derainer(net).derain_model_range(rainy)
    want = net(rainy[None], training=False).numpy()[0]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_bad_tiling_is_refused(net):
    with pytest.raises(MossError, match="overlap"):
        Derainer(net, tile_size=64, overlap=32)


def _u8(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_files_keep_format_orientation_mode_and_alpha(net, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    # A JPEG stored sideways with EXIF orientation 6 (displayed rotated 90 degrees).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_u8(30, 44)).save(photos / "sideways.jpg", exif=exif.tobytes())
    Image.fromarray(_u8(33, 41, 1)[..., 0]).save(photos / "gray.png")
    alpha = np.linspace(0, 255, 25 * 27).reshape(25, 27).astype(np.uint8)
    rgba = np.dstack([_u8(25, 27, 2), alpha])
    Image.fromarray(rgba).save(photos / "alpha.png")
    Image.fromarray(_u8(20, 24, 3)[..., 0].astype(np.uint16) * 257).save(photos / "deep.png")
    (photos / "broken.png").write_bytes(b"not an image")

    out = tmp_path / "out"
    written, skipped = derain_files(Derainer(net), photos, out, progress=False)
    assert sorted(p.name for p in written) == ["alpha.png", "deep.png", "gray.png", "sideways.jpg"]
    assert len(skipped) == 1 and "broken.png" in skipped[0]

    with Image.open(out / "sideways.jpg") as image:
        assert image.format == "JPEG" and image.getexif().get(0x0112) == 1
    # Displayed the same way round and size as the original.
    assert read_image(out / "sideways.jpg").shape == read_image(photos / "sideways.jpg").shape
    with Image.open(out / "gray.png") as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (41, 33))
    with Image.open(out / "alpha.png") as image:
        assert image.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(image)[..., 3], rgba[..., 3])
    with Image.open(out / "deep.png") as image:
        assert (image.mode, image.size) == ("L", (24, 20))  # 16-bit saved at 8 bits

    # A format we do not write back (GIF would be re-quantised) becomes PNG.
    Image.fromarray(_u8(20, 22, 4)).save(tmp_path / "anim.gif")
    (gif_result,), _ = derain_files(Derainer(net), tmp_path / "anim.gif", out, progress=False)
    assert gif_result.name == "anim.png" and Image.open(gif_result).format == "PNG"

    with pytest.raises(MossError, match="overwrite"):
        derain_files(Derainer(net), photos / "gray.png", photos, progress=False)


def test_a_large_photo_is_tiled_and_keeps_its_size(net, tmp_path):
    source = tmp_path / "big.png"
    Image.fromarray(_u8(260, 390)).save(source)
    calls = []
    derainer = Derainer(net, tile_size=128, overlap=32)
    written, _ = derain_files(derainer, source, tmp_path / "out", progress=False)
    derainer.derain_uint8(read_image(source), on_tile=lambda done, total: calls.append(total))
    # Tiles of the image reflect-padded to multiples of 4 (the network's size
    # multiple), visited twice: the photo's memory update, then the outputs.
    tiles = len(tile_starts(260, 128, 32, multiple=4)) * len(tile_starts(392, 128, 32, multiple=4))
    assert tiles > 1 and calls[-1] == 2 * tiles
    assert written[0].name == "big.png"
    with Image.open(written[0]) as image:
        assert (image.format, image.size) == ("PNG", (390, 260))
