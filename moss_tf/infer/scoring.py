"""Evaluating a network on paired test sets: per-split and overall PSNR / SSIM.

:func:`evaluate` runs a :class:`~moss_tf.infer.derain.Derainer` over every image
of every split and scores the derained outputs and the rainy inputs against
the clean references in both conventions of docs/method.md §4 (see
:mod:`moss_tf.infer.metrics`): ``*_rgb`` is the paper's convention (RGB, truncated
outputs, scikit-image SSIM), ``*_y`` the community's (MATLAB Y channel,
rounded outputs, Gaussian SSIM). Split numbers are means over the split's
images; "overall" is the mean over all images of all splits.

The result is a plain dictionary, written as JSON by :func:`write_json`::

    {"splits": {"dense": {"n": 10, "psnr_rgb": 22.9, "ssim_rgb": 0.883,
                          "psnr_y": ..., "ssim_y": ..., "input_psnr_rgb": 17.8, ...},
                "sparse": {...}},
     "overall": {...the same keys...}}

With ``output_dir``, each derained image is saved as
``<output_dir>/<split>/derained/<name>.png`` and a side-by-side panel
(rainy | derained | clean) as ``<output_dir>/<split>/panels/<name>.png``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from moss_tf.infer.derain import Derainer
from moss_tf.infer.metrics import METRIC_KEYS, RESULT_KEYS, image_metrics, to_uint8

__all__ = [
    "RESULT_KEYS",
    "evaluate",
    "format_table",
    "input_baseline",
    "side_by_side",
    "write_json",
]


_PANEL_GAP = 4  # white pixels between the three images of a panel
_BASELINES_KEPT = 4096  # rainy-input scores remembered (a few hundred bytes each)
_baselines: OrderedDict[bytes, dict] = OrderedDict()


def _content_key(*arrays: np.ndarray) -> bytes:
    """A digest of the arrays' dtypes, shapes and values."""
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array))
    return digest.digest()


def input_baseline(rainy: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """The rainy input's own scores against its clean reference, computed once per pair.

    Validation during training scores the same test images again and again;
    their rainy inputs never change, so the pair's four numbers are kept
    (by content, for the last few thousand pairs of the process) and reused.

    Args:
        rainy, clean: float ``[H, W, 3]`` in [-1, 1], decoded from uint8 files.

    Returns:
        :func:`~moss_tf.infer.metrics.image_metrics` with ``network_output=False``.
    """
    key = _content_key(rainy, clean)
    if key in _baselines:
        _baselines.move_to_end(key)
    else:
        _baselines[key] = image_metrics(rainy, clean, network_output=False)
        if len(_baselines) > _BASELINES_KEPT:
            _baselines.popitem(last=False)
    return _baselines[key]


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """Concatenate uint8 ``[H, W, 3]`` images left to right with a thin white gap."""
    height = images[0].shape[0]
    gap = np.full((height, _PANEL_GAP, 3), 255, np.uint8)
    parts = []
    for image in images:
        parts += [image, gap]
    return np.concatenate(parts[:-1], axis=1)


def _summary(scores: dict[str, list[float]]) -> dict[str, float | int]:
    row: dict[str, float | int] = {"n": len(scores[RESULT_KEYS[1]])}
    row.update({key: float(np.mean(scores[key])) for key in RESULT_KEYS[1:]})
    return row


def _save_outputs(folder: Path, name: str, rainy, derained, clean) -> None:
    stem = Path(name).stem
    images = [to_uint8(x, truncate=False) for x in (rainy, derained, clean)]
    for sub, array in (("derained", images[1]), ("panels", side_by_side(*images))):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / sub / f"{stem}.png")


def evaluate(
    derainer: Derainer,
    test_sets: Mapping[str, tf.data.Dataset],
    output_dir: str | Path | None = None,
    progress: bool = True,
    per_image: bool = False,
) -> dict:
    """Score a network on paired test sets.

    Args:
        derainer: wraps the network; images larger than its tile size are
            derained in tiles (smaller ones, as in the usual test sets, whole).
        test_sets: split name -> dataset of unbatched dicts ``{"name": string,
            "rainy": float32 [H, W, 3] in [-1, 1], "clean": same}``, as
            :func:`moss_tf.data.build_test_sets` returns.
        output_dir: where to save derained images and panels; None (default)
            saves nothing. Derained images are rounded to uint8.
        progress: show a progress bar per split with the running PSNR (on a
            terminal; piped output gets no bar).
            Default True.
        per_image: also return every image's numbers, under ``"images"``
            (default False).

    Returns:
        ``{"splits": {name: {key: value for key in RESULT_KEYS}}, "overall": {...}}``;
        with ``per_image``, also ``"images": {split: [{"name": ..., key: value
        for key in RESULT_KEYS[1:]}, ...]}`` in the split's order.
    """
    results: dict = {"splits": {}}
    images: dict[str, list[dict]] = {}
    everything: dict[str, list[float]] = {key: [] for key in RESULT_KEYS[1:]}
    for split, dataset in test_sets.items():
        scores: dict[str, list[float]] = {key: [] for key in RESULT_KEYS[1:]}
        size = int(dataset.cardinality())
        bar = (
            keras.utils.Progbar(size if size >= 0 else None)
            if progress and sys.stdout.isatty()
            else None
        )
        if bar is not None:
            print(split)
        for index, example in enumerate(dataset.as_numpy_iterator(), start=1):
            rainy, clean = example["rainy"], example["clean"]
            derained = derainer.derain_model_range(rainy)
            output = image_metrics(derained, clean, network_output=True)
            baseline = input_baseline(rainy, clean)
            for key in METRIC_KEYS:
                scores[key].append(output[key])
                scores[f"input_{key}"].append(baseline[key])
            if per_image:
                row = {key: float(values[-1]) for key, values in scores.items()}
                images.setdefault(split, []).append({"name": example["name"].decode(), **row})
            if output_dir is not None:
                name = example["name"].decode("utf-8")
                _save_outputs(Path(output_dir) / split, name, rainy, derained, clean)
            if bar is not None:
                bar.update(index, values=[("psnr_rgb", output["psnr_rgb"])])
        if not scores[METRIC_KEYS[0]]:
            continue  # an empty split has no numbers to report
        results["splits"][split] = _summary(scores)
        for key, values in scores.items():
            everything[key] += values
    if everything[METRIC_KEYS[0]]:
        results["overall"] = _summary(everything)
    if per_image:
        results["images"] = images
    return results


def format_table(results: dict) -> str:
    """The results as a text table: one row per split, then "overall".

    PSNR in dB with two decimals, SSIM with four; the header says which
    convention each column uses.
    """
    columns = [
        ("PSNR", "psnr_rgb"),
        ("SSIM", "ssim_rgb"),
        ("PSNR-Y", "psnr_y"),
        ("SSIM-Y", "ssim_y"),
    ]
    rows = dict(results["splits"])
    if "overall" in results and len(rows) > 1:
        rows["overall"] = results["overall"]
    width = max([len("split"), *(len(name) for name in rows)])

    def cells(row: dict, prefix: str) -> str:
        return "  ".join(
            f"{row[prefix + key]:>7.2f}" if key.startswith("psnr") else f"{row[prefix + key]:>7.4f}"
            for _, key in columns
        )

    titles = "  ".join(f"{title:>7}" for title, _ in columns)
    lines = [
        f"{'':<{width}}  {'':>4}  {'derained':^{len(titles)}}  |  {'rainy input':^{len(titles)}}",
        f"{'split':<{width}}  {'n':>4}  {titles}  |  {titles}",
    ]
    lines.append("-" * len(lines[-1]))
    for name, row in rows.items():
        lines.append(f"{name:<{width}}  {row['n']:>4}  {cells(row, '')}  |  {cells(row, 'input_')}")
    lines.append(
        "PSNR/SSIM: paper convention (RGB uint8, outputs truncated, scikit-image SSIM 7x7); "
        "-Y: community convention (MATLAB Y channel, Gaussian SSIM 11x11)."
    )
    return "\n".join(lines)


def write_json(results: dict, path: str | Path) -> Path:
    """Write :func:`evaluate`'s results as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return path
