"""Latency of one image through the network: Keras eager, Keras graph, XLA, SavedModel.

    python bench/bench_inference.py                       # released model size, 2 threads
    python bench/bench_inference.py --sizes 256 512 --runs 3
    python bench/bench_inference.py --run-dir runs/demo   # a trained network instead

Every variant gets warm-up calls first (tracing, XLA compilation and oneDNN
kernel selection happen once per input size and are not counted), then
``--runs`` timed calls on one ``[1, S, S, 3]`` image; the median and the
fastest are printed in seconds. Latency does not depend on the weight
values, so the default is the released configuration with its random
initialisation. ``python -m bench`` times the released PyTorch network side
by side with moss-tf.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python bench/bench_inference.py", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--runs", type=int, default=5, help="timed calls per variant (5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (2)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow CPU threads (2)")
    parser.add_argument("--run-dir", help="time this trained network (default: random weights)")
    parser.add_argument(
        "--skip", nargs="*", default=[], help="variants to leave out, e.g. eager xla"
    )
    return parser.parse_args(argv)


def timed(fn, image, warmup: int, runs: int) -> tuple[float, float]:
    """(median, fastest) seconds of ``fn(image)``, the result copied to NumPy."""
    for _ in range(warmup):
        fn(image).numpy()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(image).numpy()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), min(seconds)


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from moss_tf.export.saved_model import export_saved_model
    from moss_tf.nn.network import MOSSNet

    if args.run_dir:
        from moss_tf.train.checkpoints import load_network

        net, _ = load_network(run_dir=args.run_dir)
    else:
        net = MOSSNet()
        net.build()

    def eager(x):
        return net(x, training=False)

    graph = tf.function(eager)
    xla = tf.function(eager, jit_compile=True)
    with tempfile.TemporaryDirectory() as folder:
        version = export_saved_model(net, Path(folder) / "moss", warmup=False)
        serve = tf.saved_model.load(str(version)).signatures["serving_default"]

        def saved_model(x):
            return serve(images=x)["derained"]

        variants = {
            "keras eager": eager,
            "keras graph": graph,
            "keras xla": xla,
            "savedmodel": saved_model,
        }
        variants = {k: v for k, v in variants.items() if k.split()[-1] not in args.skip}
        print(
            f"one image [1, S, S, 3], {args.threads} threads, median (fastest) of "
            f"{args.runs} runs after {args.warmup} warm-up calls, seconds"
        )
        header = f"| {'size':>5} | " + " | ".join(f"{name:>15}" for name in variants) + " |"
        print(header)
        print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
        for size in args.sizes:
            image = tf.random.uniform([1, size, size, 3], 0.0, 1.0, seed=size)
            cells = []
            for name, fn in variants.items():
                # The SavedModel takes [0, 1]; the Keras network [-1, 1].
                x = image if name == "savedmodel" else image * 2.0 - 1.0
                median, fastest = timed(fn, x, args.warmup, args.runs)
                cells.append(f"{median:6.3f} ({fastest:5.3f})")
            print(f"| {size:>5} | " + " | ".join(f"{c:>15}" for c in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
