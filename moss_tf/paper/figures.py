"""Figures like the paper's: comparison grids (supplementary Figs. 4-7), Eq. 9 mixtures
(Fig. 8) and the bar plot of a reproduced table.

Comparison grid: one row per image, columns rainy input | each method | ground
truth (when given), each cell with a magnified inset of the same region. The
folders have the layout the user study reads (same file stems, formats may
differ)::

    python -m moss_tf.paper.figures grid --input rainy/ --method moss=out/moss \\
        --method syn2real=out/syn2real --truth clean/ --images 12 31 --output fig6

Mixtures: the last Eq. 9 panels (mixture | network output) a semi run logged
to TensorBoard::

    python -m moss_tf.paper.figures mixtures --run-dir runs/demo --output fig8

Before and after: photographs bundled with scikit-image, rained by this
project's synthesis and derained by a preset (the README's figure)::

    python -m moss_tf.paper.figures before-after --output docs/before_after   # a JPEG

The other commands write ``<output>.png`` and ``<output>.pdf``. Figures are drawn
with matplotlib's object API (no display, no pyplot state).
"""

from __future__ import annotations

import argparse
import io
import sys
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from moss_tf.errors import MossError

__all__ = [
    "before_after_figure",
    "comparison_grid",
    "mixture_figure",
    "plot_table",
    "save_figure",
]

DEFAULT_ZOOM = (0.35, 0.35, 0.25, 0.25)
"""Inset region as fractions of the image: left, top, width, height."""
_INSET_BOX = (0.52, 0.02, 0.46, 0.46)  # where the inset sits in a cell (axes fractions)
_INSET_COLOR = "red"
# Bundled photographs the shipped model never saw, and the rain put on them.
BEFORE_AFTER_PHOTOS = ("rocket.jpg", "coffee.png", "chelsea.png")
_BEFORE_AFTER_DENSITY = (0.004, 0.006)


class FigureError(MossError):
    """A figure cannot be made; the message names the folder, file or value at fault."""


def save_figure(
    figure: Figure, output: str | Path, dpi: int = 200, formats: tuple[str, ...] = ("png", "pdf")
) -> list[Path]:
    """Write ``<output>.<format>`` for each format (PNG and PDF); returns the paths."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    paths = [output.with_suffix(f".{suffix}") for suffix in formats]
    for path in paths:
        figure.savefig(path, dpi=dpi, bbox_inches="tight")
    return paths


# --------------------------------------------------------------------------- comparison grid


def _zoom_pixels(shape: tuple[int, ...], zoom: tuple[float, float, float, float]):
    """Region ``(left, top, width, height)`` in pixels of an ``[H, W, 3]`` image."""
    height, width = shape[:2]
    left, top, w, h = zoom
    return (
        round(left * width),
        round(top * height),
        max(1, round(w * width)),
        max(1, round(h * height)),
    )


def _draw_cell(axes, image: np.ndarray, zoom) -> None:
    """An image with the zoom region outlined and magnified in a corner inset."""
    left, top, width, height = _zoom_pixels(image.shape, zoom)
    axes.imshow(image)
    axes.add_patch(
        Rectangle((left, top), width, height, fill=False, edgecolor=_INSET_COLOR, linewidth=1)
    )
    inset = axes.inset_axes(_INSET_BOX)
    inset.imshow(image[top : top + height, left : left + width], interpolation="nearest")
    inset.set_xticks([])
    inset.set_yticks([])
    for spine in inset.spines.values():
        spine.set_edgecolor(_INSET_COLOR)
        spine.set_linewidth(1.5)
    axes.set_axis_off()


def _select(available: tuple[str, ...], wanted: list[str] | None) -> list[str]:
    if not wanted:
        return list(available)
    stems = [Path(name).stem for name in wanted]
    unknown = [s for s in stems if s not in available]
    if unknown:
        raise FigureError(
            f"--images: no input image named {', '.join(unknown)} "
            f"(available: {', '.join(available[:20])}{' ...' if len(available) > 20 else ''})"
        )
    return stems


def comparison_grid(
    rainy: str | Path,
    methods: list[tuple[str, str | Path]],
    truth: str | Path | None = None,
    images: list[str] | None = None,
    zoom: tuple[float, float, float, float] = DEFAULT_ZOOM,
) -> Figure:
    """Rows of rainy input | each method | ground truth, each with a zoomed inset.

    Args:
        rainy: folder of the rainy inputs.
        methods: ``(name, folder)`` pairs, in column order; files matched by stem.
        truth: folder of the clean images, or None (real rain has none).
        images: stems (or file names) to show, in order; default all.
        zoom: inset region as fractions of the image (left, top, width, height).

    Raises:
        FigureError / StudyError: a folder or image is missing (named).
    """
    from moss_tf.data.images import read_image
    from moss_tf.study.study import build_study

    if not methods:
        raise FigureError("give at least one --method NAME=DIR")
    columns = [("rainy input", rainy), *methods]
    if truth is not None:
        columns.append(("ground truth", truth))
    study = build_study(rainy, columns)
    stems = _select(study.images, images)
    figure = Figure(figsize=(2.6 * len(columns), 2.0 * len(stems) + 0.4), layout="constrained")
    grid = np.atleast_2d(figure.subplots(len(stems), len(columns), squeeze=False))
    for row, stem in enumerate(stems):
        for column, (name, _) in enumerate(columns):
            _draw_cell(grid[row, column], read_image(study.result(name, stem)), zoom)
            if row == 0:
                grid[row, column].set_title(name, fontsize=10)
    return figure


# --------------------------------------------------------------------------- Fig. 8 mixtures


def _logged_images(log_dir: Path, tag_part: str) -> tuple[int, list[np.ndarray]]:
    """The last step's images of the first TensorBoard image tag containing ``tag_part``."""
    import tensorflow as tf

    last_step, last = -1, []
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if tag_part in value.tag and event.step >= last_step:
                    encoded = tf.make_ndarray(value.tensor)[2:]  # [width, height, png...]
                    last_step = event.step
                    last = [np.asarray(Image.open(io.BytesIO(png))) for png in encoded]
    return last_step, last


def mixture_figure(run_dir: str | Path, columns: int = 2) -> Figure:
    """Fig. 8: the Eq. 9 mixtures and the network's outputs on them, from a semi run.

    Args:
        run_dir: a run directory whose stage ``semi`` logged images
            (``train.image_every`` > 0).
        columns: panels per figure row.
    """
    log_dir = Path(run_dir) / "semi" / "logs" / "train"
    if not log_dir.is_dir():
        raise FigureError(f"{log_dir}: no semi training logs (train stage semi first)")
    step, panels = _logged_images(log_dir, "mixture")
    if not panels:
        raise FigureError(
            f"{log_dir}: no Eq. 9 mixture images logged (set train.image_every > 0 and train semi)"
        )
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.2 * columns, 1.7 * rows + 0.5), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes, panel in zip(grid.flat, panels + [None] * (grid.size - len(panels)), strict=True):
        axes.set_axis_off()
        if panel is not None:
            axes.imshow(panel)
    figure.suptitle(f"Eq. 9 mixture | network output (semi step {step})", fontsize=10)
    return figure


# --------------------------------------------------------------------------- table bar plot


def _bar_slots(data: dict) -> tuple[list[str], list[str]]:
    ours = list(data["rows"][0]["ours"])
    paper = list(dict.fromkeys(s for row in data["rows"] for s in row["paper"]))
    return ours, list(dict.fromkeys([*ours, *paper]))


def plot_table(data: dict) -> Figure:
    """Bars of our PSNR and SSIM (paper convention) per row and test split, the paper's
    values marked as dark horizontal ticks (on our bar when the split has the same name).

    Args:
        data: :func:`moss_tf.paper.report.table_data`'s mapping.
    """
    rows = data["rows"]
    ours, slots = _bar_slots(data)
    width = 0.8 / len(slots)
    x = np.arange(len(rows))
    colors = colormaps["tab10"].colors
    paper_colors = ("black", "dimgray", "saddlebrown")
    figure = Figure(figsize=(max(6.0, 1.3 * len(rows)), 6.5), layout="constrained")
    axes_pair = figure.subplots(2, 1, sharex=True)
    for index, (axes, key, title) in enumerate(
        zip(axes_pair, ("psnr_rgb", "ssim_rgb"), ("PSNR (dB)", "SSIM"), strict=True)
    ):
        shown, paper_seen = [], set()
        for slot, split in enumerate(slots):
            at = x + (slot - (len(slots) - 1) / 2) * width
            if split in ours:
                values = [(row["ours"][split] or {}).get(key, np.nan) for row in rows]
                axes.bar(at, values, width, color=colors[slot % 10], label=f"ours: {split}")
                shown += values
            paper = [row["paper"].get(split, [np.nan, np.nan])[index] for row in rows]
            if np.isfinite(paper).any():
                color = paper_colors[len(paper_seen) % len(paper_colors)]
                paper_seen.add(split)
                axes.scatter(at, paper, marker="_", s=900 * width, linewidths=3, color=color)
                axes.scatter([], [], marker="_", color=color, label=f"paper: {split}")
                shown += paper
        finite = np.asarray(shown, dtype=float)
        finite = finite[np.isfinite(finite)]
        if finite.size:
            spread = max(finite.max() - finite.min(), 0.05 * finite.max())
            low = finite.min() - 0.3 * spread
            axes.set_ylim(max(low, 0.0) if finite.min() >= 0 else low, finite.max() + 0.3 * spread)
        axes.set_ylabel(title)
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes_pair[1].set_xticks(x, [row["label"] for row in rows], rotation=25, ha="right")
    title = f"{data['source']}: {data['title']}\n{data['budget_line']}"
    figure.suptitle(textwrap.fill(title, 110, replace_whitespace=False), fontsize=9)
    return figure


# --------------------------------------------------------------------------- command line


def before_after_figure(preset: str = "moss_release", seed: int = 0) -> Figure:
    """Rows of rainy | derained for :data:`BEFORE_AFTER_PHOTOS` with ``realistic`` rain."""
    import tensorflow as tf

    from moss_tf.data.builtin import builtin_paths
    from moss_tf.data.data_config import RainConfig
    from moss_tf.data.images import read_image
    from moss_tf.data.rain import RainSynthesizer
    from moss_tf.infer.derain import Derainer

    rain = RainConfig(preset="realistic", clean_probability=0.0, veil_probability=0.0)
    rain.density = list(_BEFORE_AFTER_DENSITY)
    synthesize = RainSynthesizer(rain)
    derainer = Derainer.from_preset(preset)
    rows = []
    for index, path in enumerate(builtin_paths(list(BEFORE_AFTER_PHOTOS))):
        clean = tf.constant(read_image(path), tf.float32) / 255.0
        rainy = synthesize(clean, seed=[seed, index]).numpy()
        rainy = np.round(np.clip(rainy, 0.0, 1.0) * 255.0).astype(np.uint8)
        rows.append((rainy, derainer.derain(rainy)))
    figure = Figure(figsize=(8.0, 2.9 * len(rows)), layout="constrained")
    axes = figure.subplots(len(rows), 2, squeeze=False)
    for row, images in enumerate(rows):
        for column, (image, title) in enumerate(zip(images, ("rainy", preset), strict=True)):
            axes[row, column].imshow(image)
            axes[row, column].set_axis_off()
            if row == 0:
                axes[row, column].set_title(title)
    return figure


def _zoom_arg(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(0 <= v <= 1 for v in values) or min(values[2:]) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected LEFT,TOP,WIDTH,HEIGHT as fractions in [0, 1], e.g. 0.4,0.3,0.2,0.2"
        )
    return values  # type: ignore[return-value]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m moss_tf.paper.figures", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    grid = commands.add_parser("grid", help="rainy | methods | ground truth, zoomed insets")
    grid.add_argument("--input", required=True, help="folder of the rainy inputs")
    grid.add_argument(
        "--method", action="append", required=True, metavar="NAME=DIR", help="repeatable"
    )
    grid.add_argument("--truth", help="folder of the clean images (omit for real rain)")
    grid.add_argument("--images", nargs="+", metavar="NAME", help="images to show (default all)")
    grid.add_argument("--zoom", type=_zoom_arg, default=DEFAULT_ZOOM, help="LEFT,TOP,WIDTH,HEIGHT")
    grid.add_argument("--output", required=True, help="writes OUTPUT.png and OUTPUT.pdf")
    mixtures = commands.add_parser("mixtures", help="Fig. 8: Eq. 9 mixtures of a semi run")
    mixtures.add_argument("--run-dir", required=True)
    mixtures.add_argument("--output", required=True, help="writes OUTPUT.png and OUTPUT.pdf")
    before_after = commands.add_parser("before-after", help="rainy | derained, bundled photos")
    before_after.add_argument("--preset", default="moss_release", help="model (moss_release)")
    before_after.add_argument("--output", required=True, help="writes OUTPUT.jpg")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from moss_tf.study.study import parse_method_arg

    try:
        if args.command == "grid":
            methods = [parse_method_arg(text) for text in args.method]
            figure = comparison_grid(args.input, methods, args.truth, args.images, args.zoom)
        elif args.command == "before-after":
            figure = before_after_figure(args.preset)
        else:
            figure = mixture_figure(args.run_dir)
        if args.command == "before-after":  # photographs: a JPEG, small enough for a README
            paths = save_figure(figure, args.output, dpi=110, formats=("jpg",))
        else:
            paths = save_figure(figure, args.output)
    except MossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
