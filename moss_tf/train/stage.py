"""Running a training stage: strategy, data, and ``MOSSTrainer.fit`` with the stage's callbacks.

:func:`run_stage` is what ``python train.py`` calls. The stage is one
``fit`` over the training stream, with the callbacks of
:mod:`moss_tf.train.callbacks` for validation, checkpoints, TensorBoard, progress
and the stops (NaN, divergence, SIGTERM); yours run after them::

    run_stage(cfg, "pretrain", "runs/demo", callbacks=[keras.callbacks.CSVLogger("log.csv")])
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from moss_tf.config import ExperimentConfig, save_config
from moss_tf.errors import TrainingError
from moss_tf.infer.derain import Derainer
from moss_tf.nn.network import MOSSNet
from moss_tf.train import callbacks as stage_callbacks
from moss_tf.train import checkpoints as ckpt
from moss_tf.train.divergence import DivergenceGuard
from moss_tf.train.run_dir import StagePaths, initial_weights
from moss_tf.train.run_lock import hold_run_dir
from moss_tf.train.trainer import STAGES, MOSSTrainer

__all__ = [
    "StagePaths",
    "TrainingError",
    "build_trainer",
    "distribute",
    "is_chief",
    "make_strategy",
    "run_stage",
    "stage_batches",
    "stage_steps",
    "training_data",
    "training_dataset",
    "validation_sets",
    "worker_batches",
]


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


def learning_rate(cfg: ExperimentConfig, stage: str):
    """The stage's learning rate: a float, or a schedule of the optimizer's step count.

    The step count is the optimizer's ``iterations``, saved in every
    checkpoint, so a resumed run continues the schedule where it stopped.
    """
    start = cfg.train.learning_rate
    if stage == "semi" and cfg.semi.learning_rate is not None:
        start = cfg.semi.learning_rate
    if cfg.train.lr_schedule == "constant":
        return start
    return keras.optimizers.schedules.CosineDecay(
        start, decay_steps=stage_steps(cfg, stage), alpha=cfg.train.lr_min_fraction
    )


def weight_average_momentum(cfg: ExperimentConfig, stage: str) -> float:
    """The stage's weight-average momentum: ``1 - 1 / (train.weight_average * steps)``.

    At least 0 (an average over less than a step is the last weights); the
    Keras default 0.99 when averaging is off (then unused).
    """
    span = cfg.train.weight_average * stage_steps(cfg, stage)
    if not span:
        return 0.99
    return max(0.0, 1.0 - 1.0 / span)


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
    optimizer = keras.optimizers.Adam(
        learning_rate(cfg, stage),
        global_clipnorm=train.clip_grad_norm,
        use_ema=train.weight_average > 0,
        ema_momentum=weight_average_momentum(cfg, stage),
    )
    if cfg.train.precision_policy == "mixed_float16":  # bfloat16 needs no loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    # XLA compiles one replica's step; with several replicas the step holds
    # cross-replica calls XLA cannot compile, so it runs as a plain graph.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    trainer.compile(optimizer=optimizer, jit_compile=train.jit_compile and replicas == 1)
    optimizer.build(online.trainable_variables)
    return trainer


def training_data(cfg: ExperimentConfig, stage: str, start_step: int):
    """The stage's :class:`~moss_tf.data.TrainingData` from batch ``start_step`` on.

    Deterministic under its seed: starting at the batch an earlier run
    reached makes a resumed run see exactly what it would have (the skipped
    batches are never made).
    """
    from moss_tf.data import build_training_data

    return build_training_data(
        cfg.data,
        batch_size=cfg.train.batch_size,
        crop_size=cfg.train.crop_size,
        seed=cfg.train.seed,
        with_unlabeled=stage == "semi",
        start_step=start_step,
    )


def stage_batches(data, rows: tuple[int, int] | None = None) -> tf.data.Dataset:
    """Batches a step takes: labeled, or (labeled, unlabeled) when there is an unlabeled stream.

    ``rows=(start, stop)``: only those rows of each global batch, made
    without reading the images of the others (:meth:`TrainingData.rows`).
    """
    labeled, unlabeled = (data.labeled, data.unlabeled) if rows is None else data.rows(*rows)
    return labeled if unlabeled is None else tf.data.Dataset.zip((labeled, unlabeled))


def training_dataset(cfg: ExperimentConfig, stage: str, start_step: int) -> tf.data.Dataset:
    """Global batches of ``stage`` from ``start_step`` on, as an uninterrupted run sees them."""
    return stage_batches(training_data(cfg, stage, start_step))


def worker_batches(
    batches: Callable[[tuple[int, int] | None], tf.data.Dataset],
    context: tf.distribute.InputContext,
    global_batch: int,
) -> tf.data.Dataset:
    """One input pipeline's per-replica batches: its replicas' rows of each global batch.

    ``batches(rows)`` makes rows ``start:stop`` of every global batch (all of
    it for ``None``). A pipeline feeding every replica (one machine) makes
    the global batches; a worker of a cluster makes only its rows, so it
    reads and decodes its share of the files (``1 / workers``), not all of
    them. Each dataset element is one local replica's slice, in replica order.
    """
    per_replica = global_batch // context.num_replicas_in_sync
    local = context.num_replicas_in_sync // context.num_input_pipelines
    rows = None
    if context.num_input_pipelines > 1:
        start = context.input_pipeline_id * local * per_replica
        rows = (start, start + local * per_replica)

    def split(*tensors):
        chunks = [
            tf.reshape(t[: local * per_replica], [local, per_replica, *t.shape[1:]])
            for t in tf.nest.flatten(tensors)
        ]
        return tf.data.Dataset.from_tensor_slices(tf.nest.pack_sequence_as(tensors, chunks))

    return batches(rows).flat_map(split).prefetch(tf.data.AUTOTUNE)


def distribute(
    strategy: tf.distribute.Strategy,
    batches: Callable[[tuple[int, int] | None], tf.data.Dataset],
    global_batch: int,
):
    """Per-replica slices of each global batch, on one machine or several.

    ``batches(rows)`` makes rows ``start:stop`` of every global batch (see
    :func:`stage_batches`). Every worker makes its own rows of the same
    global batches (:func:`worker_batches`) and splits them between its
    local replicas; so N replicas together see exactly the batch one device
    would, and no worker reads another's images.
    """
    if strategy.num_replicas_in_sync == 1:
        return strategy.experimental_distribute_dataset(batches(None))

    def input_fn(context: tf.distribute.InputContext):
        return worker_batches(batches, context, global_batch)

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


def _say(message: str) -> None:
    print(message, flush=True)


def _quiet(message: str) -> None:
    pass


def run_stage(
    cfg: ExperimentConfig,
    stage: str,
    run_dir: str | Path,
    resume: bool = False,
    init: str | Path | None = None,
    strategy: tf.distribute.Strategy | None = None,
    verbose: bool = True,
    callbacks: list[keras.callbacks.Callback] | tuple = (),
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
        callbacks: Keras callbacks run after the stage's own, every step
            (``on_train_batch_end``) and every ``train.validate_every`` steps
            (``on_epoch_end``, whose logs hold ``val_psnr_rgb``). One that sets
            ``model.stop_training`` ends the stage with a checkpoint.

    Raises:
        RunDirBusy: another run holds ``run_dir`` (:mod:`moss_tf.train.run_lock`).
        MossError: naming the file, key or step at fault.
    """
    say = _say if verbose else _quiet
    with precision_policy(cfg), hold_run_dir(run_dir, say):
        return _run_stage(cfg, stage, Path(run_dir), resume, init, strategy, verbose, callbacks)


@contextlib.contextmanager
def precision_policy(cfg: ExperimentConfig):
    """Inside the block Keras builds layers under ``train.mixed_precision``'s policy.

    The policy is global in Keras: it is set for the block only and the
    previous one restored on leaving. Float32 leaves the global policy alone.
    """
    previous = keras.mixed_precision.global_policy()
    if cfg.train.precision_policy:
        keras.mixed_precision.set_global_policy(cfg.train.precision_policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _run_stage(cfg, stage, run_dir, resume, init, strategy, verbose, callbacks) -> dict:
    if stage not in STAGES:
        raise TrainingError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")
    strategy = strategy or make_strategy(cfg.train.devices)
    say = _say if verbose and is_chief(strategy) else _quiet
    init = initial_weights(stage, run_dir, resume, init)
    resume = _resumable(StagePaths(run_dir, stage), resume, say)
    paths = _stage_folder(run_dir, stage, strategy, resume, say)
    trainer = _new_trainer(cfg, stage, strategy, None if resume else init)
    state = stage_callbacks.StageState(
        paths, ckpt.state_variables(trainer), {"stage": stage, "config": cfg.to_dict()}, _guard(cfg)
    )
    step = _restore(state, trainer, StagePaths(run_dir, stage).last, cfg, say) if resume else 0
    _save_config(cfg, paths.folder / ckpt.CONFIG_FILE)
    if is_chief(strategy):
        _save_config(cfg, run_dir / ckpt.CONFIG_FILE)
    data = training_data(cfg, stage, step)

    def batches(rows=None):
        return stage_batches(data, rows)

    panel_batch = next(iter(batches()))  # the global batch, for TensorBoard's image panels
    ours = _stage_callbacks(cfg, stage, trainer, state, step, say, panel_batch)
    with ours["signals"]:
        if step < stage_steps(cfg, stage):  # a finished stage resumed trains no more
            trainer.fit(
                distribute(strategy, batches, cfg.train.batch_size),
                **_epochs(stage_steps(cfg, stage), cfg.train.validate_every, step),
                callbacks=[*ours.values(), *callbacks],
                shuffle=False,  # the stream is shuffled, by seed (Keras would only warn)
                verbose=0,
            )
    return _finish(trainer, state, ours["clock"], ours["validation"].history, run_dir, say)


def _save_config(cfg: ExperimentConfig, path: Path) -> None:
    """:func:`save_config`, atomically (a config.yaml is never half written)."""
    ckpt.atomic_write(path, lambda tmp: save_config(cfg, tmp))


def _resumable(paths: StagePaths, resume: bool, say) -> bool:
    """Whether there is a checkpoint to resume from (saying so when asked for none)."""
    if resume and not paths.last.is_file():
        say(f"note: nothing to resume in {paths.folder} (no checkpoint yet); starting at step 0")
        return False
    return resume


def _stage_folder(run_dir: Path, stage: str, strategy, resume: bool, say) -> StagePaths:
    """The stage's folder, ready to write: an earlier run moved aside, space checked.

    Other workers of a cluster write beside the chief, never over it.
    """
    paths = StagePaths(run_dir, stage)
    if not is_chief(strategy):
        resolver = strategy.cluster_resolver
        paths = StagePaths(run_dir / "workers" / f"{resolver.task_type}-{resolver.task_id}", stage)
    elif not resume and paths.folder.exists() and any(paths.folder.iterdir()):
        kept = _unused_name(
            paths.folder.with_name(f"{stage}.previous-{time.strftime('%Y%m%d-%H%M%S')}")
        )
        paths.folder.rename(kept)
        say(
            f"note: {paths.folder} held an earlier run; moved it to {kept} "
            "(use --resume to continue a run)"
        )
    ckpt.check_writable(paths.folder / "checkpoints", needed_bytes=64 * 2**20)
    return paths


def _unused_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... the first that does not exist."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


def _new_trainer(cfg: ExperimentConfig, stage: str, strategy, init: Path | None) -> MOSSTrainer:
    """The stage's trainer in ``strategy``'s scope, seeded, after the batch is checked."""
    replicas = strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise TrainingError(
            f"train.batch_size={cfg.train.batch_size} must be divisible by the "
            f"{replicas} replicas (it is the global batch)"
        )
    keras.utils.set_random_seed(cfg.train.seed)
    with strategy.scope():
        return build_trainer(cfg, stage, init)


def _guard(cfg: ExperimentConfig) -> DivergenceGuard:
    return DivergenceGuard(
        loss_factor=cfg.train.divergence_loss_factor,
        patience=cfg.train.divergence_patience,
        scale_limit=cfg.train.divergence_scale_limit,
    )


def _restore(state, trainer, path: Path, cfg: ExperimentConfig, say) -> int:
    """Load the checkpoint at ``path`` into ``state``; returns its step."""
    restored = ckpt.restore_state(path, state.variables)
    state.best_psnr = restored.get("best_psnr", -math.inf)
    state.guard.restore(restored.get("divergence_guard"))
    # The optimizer's state holds a constant learning rate; a resumed run uses
    # the configured one (e.g. lowered after a divergence), not the saved one.
    # A schedule is rebuilt from the config and reads the restored step count.
    rate = learning_rate(cfg, state.meta["stage"])
    if not callable(rate):
        trainer.optimizer.learning_rate.assign(rate)
    say(f"resuming {state.meta['stage']} from {path} at step {restored['step']}")
    return restored["step"]


def _stage_callbacks(cfg, stage, trainer, state, step, say, panel_batch) -> dict:
    """The stage's callbacks by name, in the order they act after a step.

    NaN first (nothing else sees a broken step), the divergence stop after
    the loggers (the exploding value is logged) and before the checkpoint,
    the signal stop last (the step is complete when it saves).
    """
    train, total = cfg.train, stage_steps(cfg, stage)
    splits = validation_sets(cfg)
    say(
        f"{stage}: {total} steps of batch {train.batch_size} "
        f"({train.crop_size}x{train.crop_size} crops) on "
        f"{trainer.distribute_strategy.num_replicas_in_sync} replica(s); "
        f"validation splits: {', '.join(splits)}; best checkpoint chosen on "
        f"{', '.join(stage_callbacks.selected_splits(splits, train.select_on))}"
    )
    checkpointing = stage_callbacks.Checkpointing(step, total, train.checkpoint_every, state)
    return {
        "clock": stage_callbacks.StageClock(step, total),
        "nan": stage_callbacks.NaNStop(step, total, stage, state),
        "progress": stage_callbacks.ProgressLog(step, total, train.log_every, stage, say),
        "tensorboard": stage_callbacks.TensorBoardLog(
            step, total, state.paths.logs, train.log_every, train.image_every, panel_batch
        ),
        "divergence": stage_callbacks.DivergenceStop(step, total, train.log_every, stage, state),
        "loss_window": stage_callbacks.LossWindow(step, total, train.log_every),
        "validation": stage_callbacks.Validation(
            step,
            total,
            train.validate_every,
            Derainer(trainer.online),
            splits,
            state,
            say,
            select_on=train.select_on,
            select_floor=train.select_floor,
        ),
        "checkpointing": checkpointing,
        "signals": stage_callbacks.SignalStop(step, total, checkpointing),
    }


def _epochs(total: int, every: int, step: int) -> dict:
    """``fit`` arguments for steps ``step + 1 .. total``; an epoch is ``every`` steps from step 0.

    The last epoch may be cut short: :class:`~moss_tf.train.callbacks.StageClock`
    stops ``fit`` at ``total``.
    """
    return {
        "epochs": math.ceil(total / every),
        "steps_per_epoch": every,
        "initial_epoch": step // every,
    }


def _finish(trainer, state, clock, history, run_dir: Path, say) -> dict:
    """Final and best weights, the run's ``model.weights.h5``, ``summary.json``."""
    paths = state.paths
    ckpt.save_weights(trainer.online, paths.final_weights)
    if not paths.best_weights.is_file():
        ckpt.save_weights(trainer.online, paths.best_weights)
    if paths.run_dir == run_dir:  # the chief's (workers write under workers/)
        ckpt.atomic_write(
            run_dir / ckpt.MODEL_WEIGHTS, lambda tmp: shutil.copyfile(paths.best_weights, tmp)
        )
    summary = {
        "stage": state.meta["stage"],
        "steps": clock.step,
        "seconds": clock.seconds,
        "best_mean_psnr_rgb": state.best_psnr,
        "last_losses": clock.last_logs,
        "validation": history,
    }
    text = json.dumps(summary, indent=2)
    ckpt.atomic_write(paths.folder / "summary.json", lambda tmp: Path(tmp).write_text(text))
    best = (
        f"best validation mean PSNR {state.best_psnr:.2f} dB"
        if math.isfinite(state.best_psnr)
        else "no validation was chosen (none ran, or none met train.select_floor), so "
        "best.weights.h5 is the final network"
    )
    say(
        f"{summary['stage']} done: {clock.step} steps in {clock.seconds:.0f} s; {best}; "
        f"network for evaluation/export: {run_dir / ckpt.MODEL_WEIGHTS}"
    )
    return summary
