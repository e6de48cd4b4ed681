"""Write a grid of rain samples as one PNG, to see what a rain preset looks like.

Rows are scikit-image's bundled photographs (nothing from a dataset is
shown); the first column is the clean crop, the others the same crop with
rain from consecutive seeds::

    python -m moss_tf.data.rain_samples --output docs/rain_realistic.png
    python -m moss_tf.data.rain_samples --preset heavy --streaks none --output heavy.png
    python -m moss_tf.data.rain_samples --stats ../shared/data/bsd300_clean
    python -m moss_tf.data.rain_samples --streaks none --set depth_layers=[1,3] \
        --set accumulation_probability=1 --output depth.png

``--set KEY=VALUE`` sets a key of the rain (``data.labeled.rain`` of a
config: a YAML value), ``--config FILE`` starts from that config's labeled rain.

``--stats FOLDER`` prints instead how strong the rain is: PSNR of rainy vs
clean on centre crops of the folder's first photographs (by name), one seed
each. ``--streaks`` composites streak-layer images (default: the Garg & Nayar
layers in ``../shared/data/rain_streaks_garg`` when present).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from moss_tf.data.builtin import builtin_paths
from moss_tf.data.data_config import RAIN_PRESETS, RainConfig, resolve_path
from moss_tf.data.images import read_image
from moss_tf.data.pool import ImagePool

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png")
DEFAULT_STREAKS = "../shared/data/rain_streaks_garg"
GAP = 4


def _center_crop(image: np.ndarray, size: int) -> np.ndarray:
    y = (image.shape[0] - size) // 2
    x = (image.shape[1] - size) // 2
    return image[y : y + size, x : x + size]


def _layers(streaks: str | None) -> ImagePool | None:
    if streaks is None:
        return None
    folder = resolve_path(streaks, "--streaks")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return ImagePool([read_image(p)[..., :1].copy() for p in files])


def rain_config(preset: str, streaks: str | None, keys: dict | None = None) -> RainConfig:
    """The rain of ``preset`` with streak layers ``streaks`` and ``keys`` set, checked.

    Raises:
        ConfigError: naming ``data.labeled.rain.KEY`` for a bad key or value.
    """
    from moss_tf.config import config_from_dict

    values = {"preset": preset, "streaks": streaks, **(keys or {})}
    return config_from_dict({"data": {"labeled": {"rain": values}}}).data.labeled.rain


def render_grid(
    preset: str | RainConfig,
    streaks: str | None,
    columns: int = 4,
    crop: int = 224,
    seed: int = 0,
) -> np.ndarray:
    """uint8 grid: one row per photograph, clean crop then ``columns`` rainy versions.

    ``preset`` is a preset name or a whole :class:`RainConfig` (then its own
    ``streaks`` folder is used, not ``streaks``).
    """
    import tensorflow as tf

    from moss_tf.data.rain import RainSynthesizer

    rain = RainConfig(preset=preset, streaks=streaks) if isinstance(preset, str) else preset
    synth = RainSynthesizer(rain, _layers(rain.streaks))
    rows = []
    for row, path in enumerate(builtin_paths(list(PHOTOS))):
        photo = read_image(path)
        clean = _center_crop(photo, crop).astype(np.float32) / 255.0
        first_row = (photo.shape[0] - crop) // 2  # the crop's rows in the photo
        cells = [clean]
        for col in range(columns):
            rainy = synth(
                tf.constant(clean),
                seed=[seed, row * columns + col],
                rows=(first_row, photo.shape[0]),
            )
            cells.append(rainy.numpy())
        rows.append(cells)
    height = len(rows) * crop + (len(rows) - 1) * GAP
    width = (columns + 1) * crop + columns * GAP
    grid = np.ones((height, width, 3), np.float32)
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            y, x = r * (crop + GAP), c * (crop + GAP)
            grid[y : y + crop, x : x + crop] = cell
    return _to_uint8(grid)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def rain_psnrs(
    preset: str | RainConfig, streaks: str | None, folder: str, count: int = 64, crop: int = 256
) -> np.ndarray:
    """PSNR (dB, paper convention) of rainy vs clean on centre crops of the
    first ``count`` photographs in ``folder``, seed ``[0, i]`` for the i-th;
    ``inf`` where the preset left the image clean."""
    import tensorflow as tf

    from moss_tf.data.images import list_images
    from moss_tf.data.rain import RainSynthesizer
    from moss_tf.infer.metrics import psnr_rgb

    rain = RainConfig(preset=preset, streaks=streaks) if isinstance(preset, str) else preset
    synth = RainSynthesizer(rain, _layers(rain.streaks))
    values = []
    for i, path in enumerate(list_images(resolve_path(folder, "--stats"))[:count]):
        clean = _center_crop(read_image(path), crop)
        rainy = synth(tf.constant(clean, tf.float32) / 255.0, seed=[0, i]).numpy()
        values.append(psnr_rgb(_to_uint8(rainy), clean))
    return np.array(values, np.float64)


def _print_stats(rain: RainConfig, folder: str) -> None:
    preset = rain.preset
    values = rain_psnrs(rain, None, folder)
    rained = values[np.isfinite(values)]
    print(
        f"{preset} on {len(values)} crops of {folder}: {len(values) - len(rained)} left clean; "
        f"rainy PSNR {rained.min():.1f}-{rained.max():.1f} dB, median {np.median(values):.1f} dB"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="PNG file to write")
    parser.add_argument("--stats", metavar="FOLDER", help="print rain strength on these photos")
    parser.add_argument("--preset", default="realistic", choices=sorted(RAIN_PRESETS))
    parser.add_argument(
        "--streaks",
        default=None,
        help=f"streak-layer folder, or 'none' (default: {DEFAULT_STREAKS} when it exists)",
    )
    parser.add_argument("--columns", type=int, default=4, help="rainy versions per photo")
    parser.add_argument("--crop", type=int, default=224, help="crop side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        dest="keys",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a rain key (YAML value), e.g. --set depth_layers=[1,3]; repeatable",
    )
    parser.add_argument("--config", help="start from this experiment's data.labeled.rain")
    args = parser.parse_args(argv)
    if (args.output is None) == (args.stats is None):
        parser.error("give --output (a sample grid) or --stats FOLDER (rain strength)")
    streaks = args.streaks
    if streaks is None:
        try:
            resolve_path(DEFAULT_STREAKS, "--streaks")
            streaks = DEFAULT_STREAKS
        except Exception:
            streaks = None
    elif streaks == "none":
        streaks = None
    if args.stats is not None:
        _print_stats(_chosen_rain(args, streaks), args.stats)
        return
    rain = _chosen_rain(args, streaks)
    grid = render_grid(rain, None, args.columns, args.crop, args.seed)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(output, optimize=True)
    print(f"wrote {output} ({rain.preset}, streak layers: {rain.streaks or 'none'})")


def _chosen_rain(args, streaks: str | None) -> RainConfig:
    """The rain of ``--preset``/``--config`` with ``--streaks`` and every ``--set`` applied."""
    import yaml

    keys = {}
    for text in args.keys:
        key, sep, value = text.partition("=")
        if not sep:
            raise SystemExit(f"--set {text!r}: expected KEY=VALUE, e.g. depth_layers=[1,3]")
        keys[key.strip()] = yaml.safe_load(value)
    if args.config is None:
        return rain_config(args.preset, streaks, keys)
    from moss_tf.config import load_config

    base = load_config(args.config).data.labeled.rain.to_dict()
    if args.streaks is not None:
        base["streaks"] = streaks
    return rain_config(base.pop("preset"), base.pop("streaks"), {**base, **keys})


if __name__ == "__main__":
    main()
