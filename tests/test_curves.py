"""python -m moss_tf.curves reads a run's TensorBoard logs across both stages."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from moss_tf import curves


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
