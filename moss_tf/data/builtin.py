"""The built-in demo data: photographs bundled inside scikit-image.

Every file named here ships in the scikit-image wheel (``skimage/data/``),
so the demo needs no download and no ``../shared``. (Several other
``skimage.data`` images are fetched over the network by pooch on first use;
none of those is used.) The photographs are split by image, so no background
is seen in two roles:

* labeled backgrounds (rain style A is added on the fly): 7 photographs;
* unlabeled backgrounds (rain style B, the "real" target domain): 6;
* test backgrounds: 8 tiles of 128 x 128 cut from 3 further photographs.
  The same tiles get style A (split ``labeled_style``) and style B
  (``target_style``) with fixed seeds, so the two splits differ only in rain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moss_tf.data.images import read_image
from moss_tf.errors import DataError

__all__ = [
    "LABELED_PHOTOS",
    "TEST_PHOTOS",
    "TEST_TILE",
    "UNLABELED_PHOTOS",
    "builtin_dir",
    "builtin_paths",
    "builtin_test_tiles",
]

# Every photograph is at least 300 pixels on its shorter side, so crops up to
# 300 x 300 work (the paper's 256 included).
LABELED_PHOTOS = (
    "astronaut.png",
    "camera.png",
    "cell.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "motorcycle_left.png",
)
UNLABELED_PHOTOS = (
    "chelsea.png",
    "clock_motion.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "moon.png",
    "retina.jpg",
)
# Photograph -> number of test tiles cut from it.
TEST_PHOTOS = {"rocket.jpg": 4, "ihc.png": 2, "brick.png": 2}
TEST_TILE = 128


def builtin_dir() -> Path:
    """The folder of scikit-image's bundled sample images."""
    import skimage.data

    return Path(skimage.data.__file__).resolve().parent


def builtin_paths(names: tuple[str, ...] | list[str]) -> list[Path]:
    """Paths of bundled photographs, checked to exist.

    Raises:
        DataError: a file is missing (a scikit-image build without sample data).
    """
    folder = builtin_dir()
    paths = [folder / name for name in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"built-in data: {missing[0]} is missing from the installed scikit-image; "
            "reinstall scikit-image or give a dataset (data.labeled.pairs / data.labeled.clean)"
        )
    return paths


def builtin_test_tiles() -> tuple[list[np.ndarray], list[str]]:
    """The held-out clean test tiles: uint8 ``[128, 128, 3]`` in [0, 255], and names.

    Tiles sit on the photograph's grid of non-overlapping 128-pixel squares,
    spread evenly over it; names are ``<photo>_<row>_<col>``.
    """
    tiles, names = [], []
    for path in builtin_paths(list(TEST_PHOTOS)):
        image = read_image(path)
        rows, cols = image.shape[0] // TEST_TILE, image.shape[1] // TEST_TILE
        count = TEST_PHOTOS[path.name]
        for cell in np.linspace(0, rows * cols - 1, count).round().astype(int):
            row, col = divmod(int(cell), cols)
            y, x = row * TEST_TILE, col * TEST_TILE
            tiles.append(np.ascontiguousarray(image[y : y + TEST_TILE, x : x + TEST_TILE]))
            names.append(f"{path.stem}_{row}_{col}")
    return tiles, names
