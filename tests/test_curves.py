"""python -m moss_tf.paper.curves reads a run's TensorBoard logs across both stages."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from moss_tf.paper import curves


def write_stage(run, stage, steps, psnr, norm):
    for kind, values in (
        ("validation", {"a/psnr_rgb": psnr, "b/psnr_rgb": psnr + 2}),
        ("train", {"scale/memory_item_norm": norm}),
    ):
        writer = tf.summary.create_file_writer(str(run / stage / "logs" / kind))
        with writer.as_default():
            for step in steps:
                for tag, value in values.items():
                    tf.summary.scalar(tag, value, step=step)
            tf.summary.image("panel", tf.zeros((1, 4, 4, 3)), step=steps[-1])
        writer.close()


def test_semi_continues_after_pretrain_and_splits_are_averaged(tmp_path):
    run = tmp_path / "run"
    write_stage(run, "pretrain", [50, 100], psnr=20.0, norm=9.0)
    write_stage(run, "semi", [50], psnr=22.0, norm=5.0)
    got = curves.run_curves(run)
    np.testing.assert_allclose(got["psnr"], [[50, 21], [100, 21], [150, 23]])
    np.testing.assert_allclose(got["scale/memory_item_norm"][:, 0], [50, 100, 150])
    assert curves.main([f"{run}=mine", "--output", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_largest_fall_counts_only_validations_after_the_window_start():
    psnr = np.array([[1000, 20.0], [1500, 26.0], [2000, 24.0], [2500, 25.0], [3000, 27.0]])
    # 24.0 at step 2,000 is not after 2,000; 25.0 at 2,500 is 1 dB below the 26.0 before it
    assert curves.largest_fall(psnr, after=2000) == 1.0
    assert curves.largest_fall(psnr, after=1000) == 2.0
    assert curves.largest_fall(psnr[:3], after=2000) != curves.largest_fall(psnr[:3], after=2000)


def test_main_prints_each_runs_fall_and_largest_scales(tmp_path, capsys):
    run = tmp_path / "run"
    write_stage(run, "pretrain", [100, 200], psnr=20.0, norm=9.0)
    write_stage(run, "semi", [100], psnr=19.5, norm=12.0)  # step 300, 0.5 dB down
    assert curves.main([f"{run}=mine", "--after", "150", "--output", str(tmp_path / "c.png")]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("mine"))
    final, fall_mean, fall_plotted, norm, variance = (float(x) for x in line.split()[1:])
    assert (final, fall_mean, fall_plotted, norm) == (20.5, 0.5, 0.5, 12.0)
    assert variance != variance  # not logged by this run: NaN, not 0
