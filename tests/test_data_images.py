"""Decoding real-world image files: formats, modes, EXIF, bad files, range helpers."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from moss_tf.data import ImageError, from_model_range, list_images, read_image, to_model_range
from moss_tf.data import images as images_module
from moss_tf.errors import MossError


def _rgb(height=12, width=20, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("ending", ["png", "bmp", "tif", "webp"])
def test_lossless_formats_round_trip(tmp_path, ending):
    image = _rgb()
    path = tmp_path / f"x.{ending}"
    Image.fromarray(image).save(path, **({"lossless": True} if ending == "webp" else {}))
    decoded = read_image(path)
    assert decoded.dtype == np.uint8 and decoded.shape == (12, 20, 3)
    np.testing.assert_array_equal(decoded, image)


def test_jpeg_decodes_close_to_the_original(tmp_path):
    image = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    Image.fromarray(image).save(tmp_path / "x.jpg", quality=95)
    decoded = read_image(tmp_path / "x.jpg")
    assert decoded.shape == (16, 16, 3)
    assert np.abs(decoded.astype(int) - image).max() <= 4


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _rgb()[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    decoded = read_image(tmp_path / "g.png")
    assert decoded.shape == (12, 20, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], gray)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path):
    values = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    decoded = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(decoded[0, :, 0], [0, 1, 255, 128])


def test_sixteen_bit_rgb_png_keeps_colour(tmp_path):
    values = np.zeros((4, 4, 3), np.uint16)
    values[..., 0] = 65535  # pure red at 16 bits
    (tmp_path / "c16.png").write_bytes(tf.io.encode_png(values).numpy())
    decoded = read_image(tmp_path / "c16.png")
    np.testing.assert_array_equal(decoded[0, 0], [255, 0, 0])


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    decoded = read_image(tmp_path / "a.png").astype(int)
    np.testing.assert_array_equal(decoded[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(decoded[0, 1], [255, 255, 255])
    assert np.all(np.abs(decoded[1, 0] - 127) <= 1)


def test_palette_images_with_and_without_transparency(tmp_path):
    palette_image = Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette_image.save(tmp_path / "p.png")
    expected = np.asarray(palette_image.convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), expected)

    index = int(np.asarray(palette_image)[0, 0])
    palette_image.save(tmp_path / "pt.png", transparency=index)
    decoded = read_image(tmp_path / "pt.png")
    np.testing.assert_array_equal(decoded[0, 0], [255, 255, 255])  # transparent -> white


def test_exif_orientation_is_applied(tmp_path):
    # Stored 10 wide x 20 high with a bright top row; orientation 6 means
    # "rotate 90 degrees clockwise to display", so it shows 20 wide x 10 high
    # with the bright row on the right.
    stored = np.zeros((20, 10, 3), np.uint8)
    stored[:2] = 255
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    decoded = read_image(tmp_path / "rotated.jpg")
    assert decoded.shape == (10, 20, 3)
    assert decoded[:, -1].mean() > 200 and decoded[:, 0].mean() < 50


def test_max_side_downscales_large_images(tmp_path):
    Image.fromarray(_rgb(300, 600)).save(tmp_path / "big.jpg")
    Image.fromarray(_rgb(300, 600)).save(tmp_path / "big.png")
    assert read_image(tmp_path / "big.jpg", max_side=100).shape == (50, 100, 3)
    assert read_image(tmp_path / "big.png", max_side=100).shape == (50, 100, 3)
    assert read_image(tmp_path / "big.png", max_side=1000).shape == (300, 600, 3)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", "empty file"),
        ("notes.png", b"this is not an image at all", "not an image"),
    ],
)
def test_bad_files_raise_image_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as err:
        read_image(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, MossError)


@pytest.mark.parametrize("ending", ["png", "jpg"])
def test_truncated_file_raises_image_error(tmp_path, ending):
    buffer = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buffer, format="PNG" if ending == "png" else "JPEG")
    path = tmp_path / f"cut.{ending}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_missing_file_and_decompression_bomb(tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nowhere.png")
    Image.fromarray(_rgb(40, 40)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(images_module, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="bomb") as err:
        read_image(tmp_path / "bomb.png")
    assert "bomb.png" in str(err.value)


def test_list_images_is_natural_sorted_and_skips_other_files(tmp_path):
    for name in ["rain-10.png", "rain-2.PNG", "rain-1.jpg", "._rain-3.png", "readme.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["rain-1.jpg", "rain-2.PNG", "rain-10.png"]


def test_range_helpers_follow_the_spec():
    pixels = np.array([0, 127.5, 255])
    np.testing.assert_allclose(to_model_range(np.array([0, 255], np.uint8)), [-1.0, 1.0])
    np.testing.assert_allclose(to_model_range(pixels / 255.0), [-1.0, 0.0, 1.0], atol=1e-6)
    # uint8 x -> x / 127.5 - 1, and back to [0, 1].
    values = np.arange(256, dtype=np.uint8)
    np.testing.assert_allclose(to_model_range(values), values / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_allclose(from_model_range(to_model_range(values)), values / 255, atol=1e-6)
    np.testing.assert_allclose(from_model_range(np.array([-3.0, 3.0])), [0.0, 1.0])
