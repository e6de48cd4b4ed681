"""Paper-style figures: comparison grids with zoomed insets, Eq. 9 mixtures."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from moss_tf.paper import figures
from moss_tf.study.study import StudyError


def _folder(path, names, value, suffix=".png"):
    """Flat images of 30x40, ``value`` plus the image's number (``rain_03`` -> value + 3)."""
    path.mkdir()
    for name in names:
        level = value + int(name[-1]) if name[-1].isdigit() else value
        Image.fromarray(np.full((30, 40, 3), level, np.uint8)).save(path / f"{name}{suffix}")
    return path


def test_grid_has_a_row_per_chosen_image_and_a_column_per_method(tmp_path):
    names = ["rain_01", "rain_02", "rain_03"]
    rainy = _folder(tmp_path / "rainy", names, 90, ".jpg")  # formats may differ
    moss = _folder(tmp_path / "moss", names, 160)
    truth = _folder(tmp_path / "clean", names, 200)
    code = figures.main(
        [
            "grid",
            *("--input", str(rainy), "--method", f"moss={moss}", "--truth", str(truth)),
            *("--images", "rain_03", "rain_01.jpg", "--output", str(tmp_path / "fig")),
        ]
    )
    assert code == 0
    assert (tmp_path / "fig.pdf").read_bytes().startswith(b"%PDF")
    figure = figures.comparison_grid(rainy, [("moss", moss)], truth, ["rain_03", "rain_01"])
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    assert titles == ["rainy input", "moss", "ground truth"]
    assert len(figure.axes) == 2 * 3  # rows rain_03, rain_01; columns input, moss, truth
    moss_of_rain_03 = figure.axes[1]
    assert moss_of_rain_03.images[0].get_array()[0, 0, 0] == 160 + 3
    (inset,) = moss_of_rain_03.child_axes
    # The default zoom region is a quarter of the width and height, magnified.
    assert inset.images[0].get_array().shape == (round(0.25 * 30), round(0.25 * 40), 3)


def test_grid_names_the_missing_result_and_the_unknown_image(tmp_path):
    rainy = _folder(tmp_path / "rainy", ["a", "b"], 90)
    moss = _folder(tmp_path / "moss", ["a"], 160)
    with pytest.raises(StudyError, match=r"lacks 1 of 2 originals: b\.png"):
        figures.comparison_grid(rainy, [("moss", moss)])
    moss_b = tmp_path / "moss" / "b.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(moss_b)
    with pytest.raises(figures.FigureError, match="no input image named c"):
        figures.comparison_grid(rainy, [("moss", moss)], images=["c"])


def test_mixture_figure_shows_the_last_logged_mixtures(tmp_path):
    log_dir = tmp_path / "semi" / "logs" / "train"
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for step in (1, 7):
            panels = tf.fill([3, 16, 32, 3], step / 10.0)
            tf.summary.image("mixture | output (Fig. 8)", panels, step=step, max_outputs=8)
    writer.flush()
    figure = figures.mixture_figure(tmp_path)
    assert "semi step 7" in figure.get_suptitle()
    shown = [axes.images[0].get_array() for axes in figure.axes if axes.images]
    assert len(shown) == 3 and shown[0].shape == (16, 32, 3)
    assert int(shown[0][0, 0, 0]) == round(0.7 * 255)


def test_mixture_figure_says_when_a_run_has_no_semi_logs(tmp_path):
    with pytest.raises(figures.FigureError, match="no semi training logs"):
        figures.mixture_figure(tmp_path)
