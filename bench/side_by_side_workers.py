"""Measurements of the side-by-side benchmark, each run in a fresh process by ``bench._worker``.

    python -m bench._worker reference_inference '{"sizes": [512], "threads": 2}'
    python -m bench._worker reference_training \
        '{"stage": "pretrain", "batch_size": 8, "crop_size": 64}'
    python -m bench._worker matmul_peak '{"threads": 2}'
    python -m bench._worker scoring '{"images": 100}'

The reference measurements import PyTorch and not TensorFlow; they time
:mod:`bench.reference_torch` the way ``bench._worker`` times moss-tf (same
image sizes, same fixed-batch protocol, first step untimed).
"""

from __future__ import annotations

import statistics
import time

from bench.worker_tools import CoresUsed, call_timings, max_rss_mb, setup_tensorflow, time_steps


def _setup_torch(threads: int | None):
    import torch

    if threads:
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    return torch


def reference_inference(
    sizes: list[int], warmup: int = 1, runs: int = 3, threads: int | None = None
) -> dict:
    """Latency of one ``[1, 3, S, S]`` image through the released network in PyTorch
    (``eval()``, ``inference_mode``), median of ``runs`` calls after ``warmup``."""
    torch = _setup_torch(threads)
    from bench.reference_torch import ReleasedNet

    net = ReleasedNet().eval()
    result = {"variant": "pytorch", "latency": [], "baseline_rss_mb": max_rss_mb()}
    for side in sorted(sizes):
        image = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(side))
        image = image * 2 - 1
        with torch.inference_mode(), CoresUsed() as usage:
            for _ in range(warmup):
                net(image)
            seconds = []
            for _ in range(runs):
                start = time.perf_counter()
                net(image)
                seconds.append(time.perf_counter() - start)
        result["latency"].append(
            {
                "size": side,
                "median_s": statistics.median(seconds),
                "fastest_s": min(seconds),
                "runs": runs,
                "cores_used": usage.cores,
                "peak_rss_mb": max_rss_mb(),
            }
        )
    return result


def reference_training(
    stage: str,
    batch_size: int,
    crop_size: int,
    min_steps: int = 3,
    seconds: float = 3.0,
    threads: int | None = None,
) -> dict:
    """Seconds per PyTorch training step of the released network on one fixed batch,
    timed as :func:`bench._worker.training` times moss-tf's."""
    torch = _setup_torch(threads)
    from bench.reference_torch import PretrainStep, ReleasedNet, SemiStep

    torch.manual_seed(0)
    shape = (batch_size, 3, crop_size, crop_size)
    clean = torch.rand(shape) * 2 - 1
    rainy = torch.clamp(clean + torch.rand(shape) * 0.5, -1, 1)
    if stage == "pretrain":
        step, batch = PretrainStep(ReleasedNet()), (rainy, clean)
    elif stage == "semi":
        step, batch = SemiStep(ReleasedNet()), (rainy, clean, torch.rand(shape) * 2 - 1)
    else:
        raise ValueError(f"stage must be 'pretrain' or 'semi', got {stage!r}")
    result = {"stage": stage, "batch_size": batch_size, "crop_size": crop_size}
    result["baseline_rss_mb"] = max_rss_mb()
    result.update(time_steps(lambda: step(*batch), min_steps, seconds))
    return result


def matmul_peak(size: int = 2048, seconds: float = 2.0, threads: int | None = None) -> dict:
    """GFLOP/s of a float32 ``size x size`` matrix product in TensorFlow: this machine's
    attainable peak for dense float32 work at these threads (median and best call)."""
    tf = setup_tensorflow(threads)
    product = warm_matmul(tf, size)
    with CoresUsed() as usage:
        timings = call_timings(product, 5, seconds)
    flop = 2.0 * size**3
    return {
        "size": size,
        "calls": len(timings),
        "median_gflops": flop / statistics.median(timings) / 1e9,
        "best_gflops": flop / min(timings) / 1e9,
        "cores_used": usage.cores,
        "peak_rss_mb": max_rss_mb(),
    }


def warm_matmul(tf, size: int = 2048):
    """A call that runs one float32 ``size x size`` matmul, traced and run once already."""
    a = tf.random.stateless_uniform([size, size], (1, 0))
    b = tf.random.stateless_uniform([size, size], (2, 0))
    product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    product(a, b).numpy()  # traces; oneDNN picks its kernel
    return lambda: product(a, b).numpy()


def matmul_gflops(tf, size: int = 2048, seconds: float = 1.0) -> float:
    """Median GFLOP/s of a float32 ``size x size`` matmul: the peak :func:`matmul_peak` reports."""
    timings = call_timings(warm_matmul(tf, size), 5, seconds)
    return 2.0 * size**3 / statistics.median(timings) / 1e9


class _TimedDerainer:
    """Wraps a Derainer and adds up the seconds spent in the network."""

    def __init__(self, derainer):
        self.derainer, self.seconds = derainer, 0.0

    def derain(self, images):
        start = time.perf_counter()
        out = self.derainer.derain_model_range(images)
        self.seconds += time.perf_counter() - start
        return out


def scoring(
    images: int = 100, height: int = 321, width: int = 481, threads: int | None = None
) -> dict:
    """:func:`moss_tf.infer.scoring.evaluate` on ``images`` synthetic 481x321 pairs through
    the released-size network: seconds in the network and in everything else
    (PSNR/SSIM of the outputs, the rainy-input baselines, reading the set)."""
    tf = setup_tensorflow(threads)
    import numpy as np

    from moss_tf.infer.derain import Derainer
    from moss_tf.infer.scoring import evaluate
    from moss_tf.nn.network import MOSSNet

    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (images, height, width, 3), dtype=np.uint8)
    rainy = np.clip(clean + (rng.random(clean.shape) < 0.03) * 120, 0, 255).astype(np.uint8)
    test_set = tf.data.Dataset.from_tensor_slices(
        {
            "name": [f"{i}.png" for i in range(images)],
            "rainy": rainy / np.float32(127.5) - 1,
            "clean": clean / np.float32(127.5) - 1,
        }
    )
    net = MOSSNet()
    net.build()
    derainer = _TimedDerainer(Derainer(net))
    start = time.perf_counter()
    with CoresUsed() as usage:
        evaluate(derainer, {"bench": test_set}, progress=False)
    total = time.perf_counter() - start
    result = {"images": images, "height": height, "width": width, "cores_used": usage.cores}
    result.update(network_s=derainer.seconds, other_s=total - derainer.seconds)
    result["peak_rss_mb"] = max_rss_mb()
    return result


MEASUREMENTS = {
    "reference_inference": reference_inference,
    "reference_training": reference_training,
    "matmul_peak": matmul_peak,
    "scoring": scoring,
}
"""The kinds this module adds to ``python -m bench._worker``."""
