"""Training curves of one or more runs from their TensorBoard logs, as a PNG.

``python -m moss_tf.paper.curves RUN_DIR[=LABEL] ... --output curves.png`` plots, for
each run, the holdout PSNR (RGB; the ``labeled_style`` split when validated,
else the mean over validation splits) and the memory
scales (mean memory-item norm, largest batch-norm moving variance) against the
step, with stage ``semi`` continuing where ``pretrain`` ended, and prints for
each run the numbers of the stability criterion (docs/training.md): the largest fall of
holdout PSNR below its best so far at the validations after ``--after`` (both
the plotted PSNR and the mean over all splits), and the largest scales. It
reads only the run directories' ``<stage>/logs`` (TensorFlow is not needed).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from moss_tf.commands import common as cli

STAGES = ("pretrain", "semi")
SCALES = ("scale/memory_item_norm", "scale/bn_moving_variance_max")


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar written under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    series = defaultdict(dict)
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            for event in accumulator.Tensors(tag):
                value = make_ndarray(event.tensor_proto)
                if value.ndim == 0:  # scalars only, not the image panels
                    series[tag][event.step] = float(value)
    return {tag: sorted(values.items()) for tag, values in series.items()}


def run_curves(run_dir: Path) -> dict[str, np.ndarray]:
    """Holdout PSNR and scales of a run, steps counted across both stages."""
    curves = defaultdict(list)
    offset = 0
    for stage in STAGES:
        logs = run_dir / stage / "logs"
        if not logs.is_dir():
            continue
        scalars = read_scalars(logs)
        # The labeled-style split when there is one: stages may validate on
        # different sets of splits, and a mean over different sets misleads.
        wanted = "labeled_style/psnr_rgb" if "labeled_style/psnr_rgb" in scalars else "/psnr_rgb"
        curves["psnr"] += _mean_over_tags(scalars, wanted, offset)
        curves["psnr_mean"] += _mean_over_tags(scalars, "/psnr_rgb", offset)
        for tag in SCALES:
            curves[tag] += [(offset + s, v) for s, v in scalars.get(tag, [])]
        steps = [s for points in scalars.values() for s, _ in points]
        offset += max(steps, default=0)
        curves["stage_ends"].append((offset, 0.0))
    return {key: np.array(points) for key, points in curves.items()}


def _mean_over_tags(scalars, suffix: str, offset: int) -> list[tuple[int, float]]:
    """``[(offset + step, mean over the tags ending in suffix), ...]``."""
    values = defaultdict(list)
    for tag, points in scalars.items():
        if tag.endswith(suffix):
            for step, value in points:
                values[step].append(value)
    return [(offset + step, float(np.mean(v))) for step, v in sorted(values.items())]


def largest_fall(psnr: np.ndarray, after: int) -> float:
    """Largest drop below the best so far (over all earlier validations) after step ``after``.

    ``psnr`` is ``[(step, value), ...]``; 0 when PSNR never fell, NaN when
    no validation comes after ``after``.
    """
    if not len(psnr) or psnr[-1, 0] <= after:
        return float("nan")
    best_so_far = np.maximum.accumulate(psnr[:, 1])
    late = psnr[:, 0] > after
    return float(np.max(best_so_far[late] - psnr[late, 1]))


def stability_summary(curves: dict[str, np.ndarray], after: int) -> dict[str, float]:
    """The stability numbers of one run's curves (NaN where a run has no data; docs/training.md)."""

    def column(key):
        points = curves.get(key, np.zeros((0, 2)))
        return points[:, 1] if len(points) else np.array([np.nan])

    return {
        "final PSNR": float(column("psnr_mean")[-1]),
        "fall, mean": largest_fall(curves.get("psnr_mean", np.zeros((0, 2))), after),
        "fall, plotted": largest_fall(curves.get("psnr", np.zeros((0, 2))), after),
        "max memory norm": float(column(SCALES[0]).max()),
        "max BN variance": float(column(SCALES[1]).max()),
    }


def print_summary(runs: list[tuple[str, Path]], after: int) -> None:
    """One line per run: final mean PSNR, largest falls after ``after``, largest scales."""
    rows = [(label, stability_summary(run_curves(path), after)) for label, path in runs]
    print(
        f"holdout PSNR (dB, RGB; mean of splits, and the plotted split); fall: largest "
        f"drop below the best so far at a validation after step {after}"
    )
    print("run".ljust(20) + "".join(f"{key:>17}" for key in rows[0][1]))
    for label, summary in rows:
        print(label.ljust(20) + "".join(f"{value:>17.4g}" for value in summary.values()))


def plot(runs: list[tuple[str, Path]], output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    titles = ("holdout PSNR (dB, RGB)", "mean memory-item norm", "largest BN moving variance")
    for label, run_dir in runs:
        curves = run_curves(run_dir)
        for ax, key in zip(axes, ("psnr", *SCALES), strict=True):
            if len(curves.get(key, [])):
                ax.plot(curves[key][:, 0], curves[key][:, 1], label=label)
        for end, _ in curves.get("stage_ends", [])[:-1]:
            for ax in axes:
                ax.axvline(end, color="grey", linestyle=":", linewidth=1)
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("step (pretrain, then semi after the dotted line)")
        ax.grid(alpha=0.3)
    for ax in axes[1:]:
        ax.set_yscale("log")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:  # a panel no run has data for stays bare
            ax.legend()
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moss_tf.paper.curves", description=__doc__)
    parser.add_argument("runs", nargs="+", help="run directories, each optionally =LABEL")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument(
        "--after", type=int, default=2000, help="first step of the PSNR-fall window (default 2000)"
    )
    args = parser.parse_args(argv)
    # TensorBoard's log reader imports TensorFlow when it is installed: start it quietly.
    cli.start_tensorflow()
    runs = []
    for spec in args.runs:
        path, _, label = spec.partition("=")
        if not Path(path).is_dir():
            parser.error(f"{path}: not a run directory")
        runs.append((label or Path(path).name, Path(path)))
    print_summary(runs, args.after)
    print(plot(runs, Path(args.output)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
