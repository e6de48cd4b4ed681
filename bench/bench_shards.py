"""Loose files vs TFRecord shards, and a worker's share vs slicing the global batch.

    .venv/bin/python -m bench.bench_shards                    # 300 pairs, 15 s per row
    .venv/bin/python -m bench.bench_shards --pairs 100 --seconds 5

Generates ``--pairs`` 512x384 JPEG pairs (``rain/`` + ``norain/``) in a
temporary folder (deleted afterwards; never commit generated data), packs
them with :func:`moss_tf.data.shards.pack_folder`, and times, with
``data.load=stream`` at batch ``--batch-size`` x ``--crop-size``:

* listing the set and reading every file's header (loose files; warm page
  cache) or reading the manifest (shards), and crops per second of the
  labeled stream, both ways;
* the input of one worker of two: making the whole global batch and keeping
  its half (slicing one global stream) vs making only its rows
  (:meth:`moss_tf.data.TrainingData.rows`, what training does).

The files were just written, so they sit in the page cache: this measures
the CPU cost of reading, not a cold or remote disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.bench_shards", description=__doc__)
    parser.add_argument("--pairs", type=int, default=300, help="generated pairs (300)")
    parser.add_argument("--batch-size", type=int, default=8, help="crops per batch (8)")
    parser.add_argument("--crop-size", type=int, default=64, help="crop side in pixels (64)")
    parser.add_argument("--seconds", type=float, default=15.0, help="timing per row (15)")
    return parser.parse_args(argv)


def generate_pairs(root: Path, count: int) -> Path:
    """``count`` photo-like 512x384 JPEG pairs (smooth shapes plus noise) in rain/ + norain/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "rain").mkdir(parents=True)
    (root / "norain").mkdir()
    rows, cols = np.mgrid[:384, :512]
    for n in range(count):
        phase = rng.uniform(0, 6.28, 3)
        clean = 127 + 90 * np.sin(rows[..., None] / 23.0 + cols[..., None] / 31.0 + phase)
        clean = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
        streaks = (rng.random((384, 512, 1)) < 0.01) * 120
        rainy = np.clip(clean.astype(np.int16) + streaks, 0, 255).astype(np.uint8)
        Image.fromarray(clean).save(root / "norain" / f"{n}.jpg", quality=90)
        Image.fromarray(rainy).save(root / "rain" / f"{n}.jpg", quality=90)
    return root


def listing_seconds(pairs: Path) -> float:
    """Seconds to list the pairs and read every file's header (shards: read the manifest)."""
    from moss_tf.data.layouts import find_pairs
    from moss_tf.data.stream import probe_images

    start = time.perf_counter()
    found, _ = find_pairs(pairs)
    probe_images([p.rainy for p in found] + [p.clean for p in found])
    return time.perf_counter() - start


def _open_and_read(pairs: Path, args) -> tuple[float, float, object]:
    """(seconds to list the set and read headers, labeled crops per second, the TrainingData)."""
    from bench.bench_data import crops_per_second
    from moss_tf.config import config_from_dict
    from moss_tf.data import build_training_data

    cfg = config_from_dict({"data": {"labeled": {"pairs": str(pairs)}, "load": "stream"}}).data
    data = build_training_data(
        cfg, batch_size=args.batch_size, crop_size=args.crop_size, seed=0, with_unlabeled=False
    )
    rate = crops_per_second(data.labeled, args.batch_size, args.seconds)
    return listing_seconds(pairs), rate, data


def _worker_rates(data, args) -> tuple[float, float]:
    """Crops per second one worker of two gets: slicing the global batch, making its rows."""
    from bench.bench_data import crops_per_second

    half = args.batch_size // 2
    sliced = data.labeled.map(lambda rainy, clean: (rainy[:half], clean[:half]))
    own_rows, _ = data.rows(0, half)
    return (
        crops_per_second(sliced, half, args.seconds),
        crops_per_second(own_rows, half, args.seconds),
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    from moss_tf.data.shards import pack_folder

    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; TensorFlow {tf.__version__}; "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_shards_") as folder:
        loose = generate_pairs(Path(folder) / "loose", args.pairs)
        start = time.perf_counter()
        manifest = pack_folder(loose, Path(folder) / "shards", progress=None)
        packed = time.perf_counter() - start
        total = sum(s["bytes"] for s in manifest["shards"]) / 2**20
        print(
            f"{args.pairs} pairs of 512x384 JPEGs, {total:.0f} MiB: packed in {packed:.1f} s "
            f"into {len(manifest['shards'])} shard(s)"
        )
        print(f"batch {args.batch_size} x {args.crop_size}^2 crops, data.load=stream")
        for name, source in (("loose files", loose), ("shards", Path(folder) / "shards")):
            opened, rate, data = _open_and_read(source, args)
            print(f"  {name:12s} listing {opened:6.3f} s   labeled {rate:7.1f} crops/s")
            sliced, own = _worker_rates(data, args)
            print(
                f"  {name:12s} worker 1 of 2: slicing the global batch {sliced:7.1f} crops/s, "
                f"its own rows {own:7.1f} crops/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
