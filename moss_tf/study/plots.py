"""Plots of a user study like the paper's supplementary figures.

* ``selection.png`` (Fig. 2): averaged selection percentage per method.
* ``rank_n.png`` (Fig. 3): rank-n scores of Eq. (1), one bar per method for each n.
* ``per_image.png`` (Fig. 4): the share of votes each method got on each image.

Figures are drawn with matplotlib's object API on the Agg canvas, so no
display and no global pyplot state are needed.

Example::

    write_plots(VoteStore("votes.sqlite").results(), "plots/")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from moss_tf.study.scores import StudyResults
from moss_tf.study.study import StudyError

__all__ = ["plot_per_image", "plot_rank_n", "plot_selection", "write_plots"]


def plot_selection(results: StudyResults) -> Figure:
    """Fig. 2: a bar per method, its selection percentage in [0, 100] written on top."""
    figure = Figure(figsize=(1.2 * len(results.methods) + 2, 3.5), layout="constrained")
    axes = figure.subplots()
    colors = _colors(len(results.methods))
    bars = axes.bar(results.methods, results.selection_percentage, color=colors)
    axes.bar_label(bars, fmt="%.1f%%", padding=2)
    axes.set_ylabel("averaged selection percentage (%)")
    axes.set_ylim(0, 105)
    axes.set_title(f"{results.total_votes} votes from {results.evaluators} evaluators")
    return figure


def plot_rank_n(results: StudyResults) -> Figure:
    """Fig. 3: rank-n scores R_i^n (percent) for n = 1..number of methods, grouped by n."""
    num_methods = len(results.methods)
    figure = Figure(figsize=(max(6.0, 1.6 * num_methods + 2), 3.5), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / num_methods
    ranks = np.arange(1, num_methods + 1)
    for i, (method, color) in enumerate(zip(results.methods, _colors(num_methods), strict=True)):
        offset = (i - (num_methods - 1) / 2) * width
        axes.bar(ranks + offset, results.rank_n_percentage[i], width, label=method, color=color)
    axes.set_xticks(ranks, [f"rank-{n}" for n in ranks])
    axes.set_ylabel("rank-n score (%)")
    axes.set_ylim(0, 105)
    axes.set_title(f"Eq. (1) over N = {results.images_with_votes} images with votes")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return figure


def plot_per_image(results: StudyResults) -> Figure:
    """Fig. 4: one stacked bar per image, the share (percent) of its votes per method."""
    totals = results.counts.sum(axis=1, keepdims=True)
    shares = 100.0 * results.counts / np.maximum(totals, 1)
    num_images = len(results.images)
    figure = Figure(figsize=(max(6.0, 0.25 * num_images + 2), 4), layout="constrained")
    axes = figure.subplots()
    positions = np.arange(num_images)
    bottom = np.zeros(num_images)
    for i, (method, color) in enumerate(
        zip(results.methods, _colors(len(results.methods)), strict=True)
    ):
        axes.bar(positions, shares[:, i], 0.8, bottom=bottom, label=method, color=color)
        bottom += shares[:, i]
    axes.set_xticks(positions, results.images, rotation=90, fontsize="small")
    axes.set_ylabel("share of the image's votes (%)")
    axes.set_ylim(0, 100)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return figure


def write_plots(results: StudyResults, folder: str | Path) -> list[Path]:
    """Save the three figures as PNG files in ``folder`` (created); returns their paths.

    Raises:
        StudyError: there are no votes yet.
    """
    if results.total_votes == 0:
        raise StudyError("no votes yet: nothing to plot")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, plot in [
        ("selection.png", plot_selection),
        ("rank_n.png", plot_rank_n),
        ("per_image.png", plot_per_image),
    ]:
        path = folder / name
        plot(results).savefig(path, dpi=120)
        paths.append(path)
    return paths


def _colors(count: int) -> list[tuple[float, float, float, float]]:
    # tab10 keeps up to 10 methods apart; tab20 beyond.
    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]
