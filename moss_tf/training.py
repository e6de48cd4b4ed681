"""Running a training stage: strategy, data, loop, logging, validation, checkpoints.

:func:`run_stage` is what ``python train.py`` calls. The loop is a plain
``for`` over steps around ``strategy.run(trainer.train_step)`` so that it can
checkpoint, validate and resume at any step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from moss_tf import checkpoints as ckpt
from moss_tf.config import ExperimentConfig, save_config
from moss_tf.divergence import DivergenceGuard, scale_signals
from moss_tf.errors import MossError
from moss_tf.evaluation import evaluate
from moss_tf.inference import Derainer
from moss_tf.model import MOSSNet
from moss_tf.trainer import STAGES, MOSSTrainer


class TrainingError(MossError):
    """Training cannot start or go on; the message says why and what was kept."""


def make_strategy(devices: list[str] | None = None) -> tf.distribute.Strategy:
    """The distribution strategy for this machine.

    ``TF_CONFIG`` set -> MultiWorkerMirroredStrategy; an explicit device list
    (``train.devices``) or several GPUs -> MirroredStrategy; otherwise the
    default (single-device) strategy.
    """
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices:
        return tf.distribute.MirroredStrategy(devices)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    return tf.distribute.get_strategy()


def stage_steps(cfg: ExperimentConfig, stage: str) -> int:
    """Steps of ``stage``: ``semi.steps`` when set for semi, else ``train.steps``."""
    if stage == "semi" and cfg.semi.steps is not None:
        return cfg.semi.steps
    return cfg.train.steps


@dataclass
class StagePaths:
    """Where one stage of a run keeps its files."""

    run_dir: Path
    stage: str
    folder: Path = field(init=False)

    def __post_init__(self):
        self.folder = self.run_dir / self.stage

    @property
    def last(self) -> Path:
        return self.folder / "checkpoints" / "last.npz"

    @property
    def best(self) -> Path:
        return self.folder / "checkpoints" / "best.npz"

    @property
    def best_weights(self) -> Path:
        return self.folder / "best.weights.h5"

    @property
    def final_weights(self) -> Path:
        return self.folder / "final.weights.h5"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"


def build_trainer(cfg: ExperimentConfig, stage: str, init_weights: Path | None = None):
    """Online network (and target for ``semi``), trainer and built optimizer.

    Call inside ``strategy.scope()``.
    """
    online = MOSSNet(**cfg.model.to_dict(), name="online")
    online.build()
    online.recompute = cfg.train.recompute
    if init_weights is not None:
        try:
            online.load_weights(init_weights)
        except (ValueError, OSError) as err:
            raise TrainingError(
                f"{init_weights}: cannot initialise the network from it ({err}); "
                "was it trained with another model configuration?"
            ) from None
    target = MOSSTrainer.copy_target(online) if stage == "semi" else None
    train = cfg.train
    trainer = MOSSTrainer(
        online,
        stage,
        cfg.semi,
        target,
        seed=train.seed,
        feature_scale_limit=train.feature_scale_limit,
        feature_scale_weight=train.feature_scale_weight,
    )
    optimizer = keras.optimizers.Adam(train.learning_rate, global_clipnorm=train.clip_grad_norm)
    if cfg.train.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    trainer.compile(optimizer=optimizer)
    optimizer.build(online.trainable_variables)
    return trainer


def training_dataset(cfg: ExperimentConfig, stage: str, start_step: int) -> tf.data.Dataset:
    """Global batches of ``stage`` from ``start_step`` on, as an uninterrupted run sees them."""
    from moss_tf.data import build_training_data

    data = build_training_data(
        cfg.data,
        batch_size=cfg.train.batch_size,
        crop_size=cfg.train.crop_size,
        seed=cfg.train.seed,
        with_unlabeled=stage == "semi",
        # Deterministic under its seed: starting at the batch an earlier run
        # reached makes a resumed run see exactly what it would have.
        start_step=start_step,
    )
    if stage == "semi":
        return tf.data.Dataset.zip((data.labeled, data.unlabeled))
    return data.labeled


def distribute(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset, global_batch: int):
    """Per-replica slices of each global batch, on one machine or several.

    Every input pipeline (one per worker) builds the same global batches and
    keeps its own slice, which it splits between its local replicas; so N
    replicas together see exactly the batch one device would.
    """
    if strategy.num_replicas_in_sync == 1:
        return strategy.experimental_distribute_dataset(dataset)
    per_replica = global_batch // strategy.num_replicas_in_sync

    def input_fn(context: tf.distribute.InputContext):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        start = context.input_pipeline_id * local * per_replica

        def split(*tensors):
            chunks = [
                tf.reshape(
                    t[start : start + local * per_replica], [local, per_replica, *t.shape[1:]]
                )
                for t in tf.nest.flatten(tensors)
            ]
            return tf.data.Dataset.from_tensor_slices(tf.nest.pack_sequence_as(tensors, chunks))

        return dataset.flat_map(split).prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(input_fn)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints and logs (worker 0 of a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
    )


def validation_sets(cfg: ExperimentConfig) -> dict[str, tf.data.Dataset]:
    """Held-out pairs per split (see :func:`moss_tf.data.build_test_sets`), cached in memory."""
    from moss_tf.data import build_test_sets

    return {split: dataset.cache() for split, dataset in build_test_sets(cfg.data).items()}


def _panel(images: dict[str, tf.Tensor], count: int = 4) -> tf.Tensor:
    """Side-by-side rows of the first ``count`` samples, [0, 1], for TensorBoard."""
    columns = [tf.clip_by_value((images[k][:count] + 1.0) / 2.0, 0.0, 1.0) for k in images]
    return tf.concat(columns, axis=2)


class _Stopper:
    """Turns SIGTERM/SIGINT (pre-emption, Ctrl-C) into a checkpoint and a clean exit."""

    def __init__(self):
        self.requested = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _say(message: str) -> None:
    print(message, flush=True)


def run_stage(
    cfg: ExperimentConfig,
    stage: str,
    run_dir: str | Path,
    resume: bool = False,
    init: str | Path | None = None,
    strategy: tf.distribute.Strategy | None = None,
    verbose: bool = True,
) -> dict:
    """Train ``stage`` of ``cfg`` in ``run_dir``; returns a summary dict.

    Args:
        cfg: the resolved experiment config.
        stage: ``"pretrain"`` or ``"semi"``.
        run_dir: the run directory (created if needed).
        resume: continue from ``<stage>/checkpoints/last.npz`` at its step.
        init: network weights to start from; ``semi`` defaults to the
            pretrain stage's ``final.weights.h5`` in ``run_dir``.
        strategy: a ``tf.distribute`` strategy; default :func:`make_strategy`.
        verbose: print progress.
    """
    # Mixed precision is a global Keras policy: set it for this run only.
    previous = keras.mixed_precision.global_policy()
    if cfg.train.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _run_stage(cfg, stage, run_dir, resume, init, strategy, verbose)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _run_stage(cfg, stage, run_dir, resume, init, strategy, verbose) -> dict:
    if stage not in STAGES:
        raise TrainingError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")
    run_dir = Path(run_dir)
    strategy = strategy or make_strategy(cfg.train.devices)
    chief = is_chief(strategy)
    paths = StagePaths(run_dir, stage)  # what this run reads (resume, init)
    if not chief:  # other workers of a cluster write beside the chief, never over it
        resolver = strategy.cluster_resolver
        worker_dir = run_dir / "workers" / f"{resolver.task_type}-{resolver.task_id}"
    say = _say if verbose and chief else (lambda message: None)
    total_steps = stage_steps(cfg, stage)

    # ---- checks that must fail before any work
    if stage == "semi" and init is None and not (resume and paths.last.is_file()):
        init = run_dir / "pretrain" / "final.weights.h5"
        if not init.is_file():
            raise TrainingError(
                f"stage semi starts from the pretrained network, but {init} does not exist: "
                f"run python train.py --stage pretrain --run-dir {run_dir} first "
                "(or pass --init WEIGHTS)"
            )
    if init is not None and not Path(init).is_file():
        raise TrainingError(f"--init {init}: file not found")
    if resume and not paths.last.is_file():
        say(f"note: nothing to resume in {paths.folder} (no checkpoint yet); starting at step 0")
        resume = False
    if chief and not resume and paths.folder.exists() and any(paths.folder.iterdir()):
        kept = paths.folder.with_name(f"{stage}.previous-{time.strftime('%Y%m%d-%H%M%S')}")
        paths.folder.rename(kept)
        say(
            f"note: {paths.folder} held an earlier run; moved it to {kept} "
            "(use --resume to continue a run)"
        )
    restore_from = paths.last
    if not chief:
        paths = StagePaths(worker_dir, stage)
    ckpt.check_writable(paths.folder / "checkpoints", needed_bytes=64 * 2**20)

    keras.utils.set_random_seed(cfg.train.seed)
    replicas = strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise TrainingError(
            f"train.batch_size={cfg.train.batch_size} must be divisible by the "
            f"{replicas} replicas (it is the global batch)"
        )

    with strategy.scope():
        trainer = build_trainer(cfg, stage, Path(init) if init and not resume else None)
    variables = ckpt.state_variables(trainer)
    meta = {"stage": stage, "config": cfg.to_dict()}

    step = 0
    best_psnr = -np.inf
    guard = DivergenceGuard(
        loss_factor=cfg.train.divergence_loss_factor,
        patience=cfg.train.divergence_patience,
        scale_limit=cfg.train.divergence_scale_limit,
    )
    if resume:
        restored = ckpt.restore_state(restore_from, variables)
        step = restored["step"]
        best_psnr = restored.get("best_psnr", -np.inf)
        guard.restore(restored.get("divergence_guard"))
        # The optimizer's state holds its learning rate; a resumed run uses the
        # configured one (e.g. lowered after a divergence), not the saved one.
        trainer.optimizer.learning_rate.assign(cfg.train.learning_rate)
        say(f"resuming {stage} from {restore_from} at step {step}")
    save_config(cfg, paths.folder / ckpt.CONFIG_FILE)
    if chief:
        save_config(cfg, run_dir / ckpt.CONFIG_FILE)

    dataset = training_dataset(cfg, stage, step)
    batches = iter(distribute(strategy, dataset, cfg.train.batch_size))
    splits = validation_sets(cfg)
    derainer = Derainer(trainer.online)
    say(
        f"{stage}: {total_steps} steps of batch {cfg.train.batch_size} "
        f"({cfg.train.crop_size}x{cfg.train.crop_size} crops) on {replicas} replica(s); "
        f"validation splits: {', '.join(splits)}"
    )

    def one_step(batch):
        return strategy.run(trainer.train_step, args=(batch,))

    # XLA compiles one replica's step; with several replicas the step holds
    # cross-replica calls XLA cannot compile, so it runs as a plain graph.
    step_fn = tf.function(one_step, jit_compile=cfg.train.jit_compile and replicas == 1)

    writer = tf.summary.create_file_writer(str(paths.logs / "train"))
    val_writer = tf.summary.create_file_writer(str(paths.logs / "validation"))
    progress = keras.utils.Progbar(total_steps, verbose=1 if sys.stdout.isatty() else 0)
    progress.update(step)
    history = []

    def save_last():
        state = {**meta, "best_psnr": best_psnr, "divergence_guard": guard.state()}
        ckpt.save_state(paths.last, variables, step, state)

    def stop_diverged(reason):
        kept = ckpt.describe(paths.last) if paths.last.is_file() else "none"
        best = ckpt.describe(paths.best) if paths.best.is_file() else "none"
        raise TrainingError(
            f"{stage}: training diverged at step {step}: {reason}; stopped. "
            f"Last checkpoint kept: {kept}; best validated checkpoint: {best}. "
            "Try a lower train.learning_rate (or keep train.feature_scale_weight > 0)."
        )

    def run_validation():
        nonlocal best_psnr
        scores = evaluate(derainer, splits, progress=False)["splits"]
        mean_psnr = float(np.mean([s["psnr_rgb"] for s in scores.values()]))
        with val_writer.as_default(step=step):
            for split, values in scores.items():
                for key in ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y"):
                    tf.summary.scalar(f"{split}/{key}", values[key])
        history.append(
            {"step": step, **{f"{s}/{k}": v for s, d in scores.items() for k, v in d.items()}}
        )
        line = "  ".join(
            f"{split} {v['psnr_rgb']:.2f} dB / {v['ssim_rgb']:.3f} "
            f"(input {v['input_psnr_rgb']:.2f})"
            for split, v in scores.items()
        )
        say(f"[{stage} step {step}] validation: {line}")
        if mean_psnr > best_psnr:
            best_psnr = mean_psnr
            ckpt.save_state(paths.best, variables, step, {**meta, "best_psnr": best_psnr})
            ckpt.save_weights(trainer.online, paths.best_weights)
        return scores

    started = time.perf_counter()
    window_start, window_steps = started, 0
    last_logs = {}
    with _Stopper() as stopper:
        while step < total_steps:
            batch = next(batches)
            logs = step_fn(batch)
            step += 1
            window_steps += 1
            last_logs = {k: float(strategy.reduce("MEAN", v, axis=None)) for k, v in logs.items()}
            if not np.isfinite(last_logs["loss"]):
                kept = ckpt.describe(paths.last) if paths.last.is_file() else "none"
                raise TrainingError(
                    f"{stage}: the loss became {last_logs['loss']} at step {step}; stopped. "
                    f"Last good checkpoint kept: {kept}. Try a lower train.learning_rate."
                )
            reason = guard.check_loss(step, last_logs["loss"])
            if reason:
                stop_diverged(reason)
            progress.update(step, list(last_logs.items()))
            if step % cfg.train.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                rate = window_steps / max(now - window_start, 1e-9)
                window_start, window_steps = now, 0
                scales = scale_signals(trainer.online)
                with writer.as_default(step=step):
                    for key, value in last_logs.items():
                        tf.summary.scalar(f"loss/{key}", value)
                    for key, value in scales.items():
                        tf.summary.scalar(f"scale/{key}", value)
                    tf.summary.scalar("steps_per_second", rate)
                reason = guard.check_scales(scales)
                if reason:
                    stop_diverged(reason)
                if not sys.stdout.isatty():
                    losses = " ".join(f"{k} {v:.4g}" for k, v in {**last_logs, **scales}.items())
                    say(f"[{stage} step {step}/{total_steps}] {losses}  {rate:.2f} steps/s")
                for tracker in trainer.metrics:
                    tracker.reset_state()
            if cfg.train.image_every and (step % cfg.train.image_every == 0 or step == 1):
                _, images = trainer.compute_losses(_local_batch(strategy, batch), training=False)
                with writer.as_default(step=step):
                    tf.summary.image(
                        "rainy | output | clean",
                        _panel({k: images[k] for k in ("rainy", "output", "clean")}),
                        max_outputs=4,
                    )
                    if "mixture" in images:
                        tf.summary.image(
                            "mixture | output (Fig. 8)",
                            _panel({k: images[k] for k in ("mixture", "mixture_output")}, 8),
                            max_outputs=8,
                        )
            if step % cfg.train.validate_every == 0 or step == total_steps:
                run_validation()
            # A checkpoint is not written in the middle of a loss jump, so the
            # last one kept is from before a divergence the guard then stops.
            if (step % cfg.train.checkpoint_every == 0 or step == total_steps) and not (
                guard.suspicious
            ):
                save_last()
            if stopper.requested:
                save_last()
                raise TrainingError(
                    f"{stopper.requested} received at step {step}: checkpoint saved to "
                    f"{paths.last}; continue with --resume"
                )

    elapsed = time.perf_counter() - started
    ckpt.save_weights(trainer.online, paths.final_weights)
    if not paths.best_weights.is_file():
        ckpt.save_weights(trainer.online, paths.best_weights)
    if chief:
        shutil.copyfile(paths.best_weights, run_dir / ckpt.MODEL_WEIGHTS)
    summary = {
        "stage": stage,
        "steps": step,
        "seconds": elapsed,
        "best_mean_psnr_rgb": best_psnr,
        "last_losses": last_logs,
        "validation": history,
    }
    (paths.folder / "summary.json").write_text(json.dumps(summary, indent=2))
    say(
        f"{stage} done: {step} steps in {elapsed:.0f} s; best validation mean PSNR "
        f"{best_psnr:.2f} dB; network for evaluation/export: {run_dir / ckpt.MODEL_WEIGHTS}"
    )
    return summary


def _local_batch(strategy, batch):
    """The first replica's share of a distributed batch (for image summaries)."""
    return tf.nest.map_structure(lambda t: strategy.experimental_local_results(t)[0], batch)
