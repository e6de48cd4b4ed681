"""The Keras callbacks that make ``MOSSTrainer.fit`` a training stage, one concern each.

:func:`moss_tf.train.stage.run_stage` trains with ``fit`` and these callbacks;
a user's own callbacks (early stopping, a learning-rate schedule, an
experiment tracker) go after them and see the same logs. One Keras epoch is
``train.validate_every`` steps, so epoch-end logs carry ``val_psnr_rgb``.

Every callback counts the stage's global step itself (steps before a resume
included) and acts on "every N steps, and the last one", as the run's config
says. Keras's stock callbacks fall short here, each for a reason given in its
replacement's docstring.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from moss_tf.config import FLOOR_INPUT
from moss_tf.errors import ConfigError, TrainingError
from moss_tf.infer.scoring import evaluate
from moss_tf.train import checkpoints as ckpt
from moss_tf.train.divergence import DivergenceGuard, scale_signals
from moss_tf.train.run_dir import StagePaths


def due(step: int, every: int, last: int) -> bool:
    """Whether something done every ``every`` steps (and at the ``last``) is due at ``step``."""
    return step % every == 0 or step == last


def in_tracker_order(model, logs: dict) -> dict:
    """``logs`` in the order of the model's loss trackers (Keras hands them over sorted by name)."""
    names = [metric.name for metric in model.metrics]
    return {**{name: logs[name] for name in names if name in logs}, **logs}


class StepCallback(keras.callbacks.Callback):
    """A callback that knows the global step: :meth:`on_step` runs after each one.

    Args:
        start_step: the step the stage starts (or resumes) at.
        total_steps: the stage's last step.
    """

    def __init__(self, start_step: int, total_steps: int):
        super().__init__()
        self.step = start_step
        self.total_steps = total_steps

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.on_step(self.step, logs if logs is not None else {})

    def on_step(self, step: int, logs: dict) -> None:
        """Called with the global step just trained and its logs (floats)."""


@dataclass
class StageState:
    """What a checkpoint of the stage holds, and where the stage's files go.

    Attributes:
        paths: the stage's files.
        variables: every variable a resumed run needs, in checkpoint order
            (:func:`~moss_tf.train.checkpoints.state_variables`).
        meta: stage and config, saved with every checkpoint.
        guard: the divergence guard, whose state is saved too.
        best_psnr: the best mean validation PSNR so far (RGB, dB).
    """

    paths: StagePaths
    variables: list
    meta: dict
    guard: DivergenceGuard
    best_psnr: float = -math.inf

    def save(self, path: Path, step: int) -> None:
        """Write the full state to ``path`` (atomic; :func:`~.checkpoints.save_state`)."""
        meta = {**self.meta, "best_psnr": self.best_psnr, "divergence_guard": self.guard.state()}
        try:
            ckpt.save_state(path, self.variables, step, meta)
        except ckpt.CheckpointError as err:  # a full disk, say: stop, keeping the last good one
            raise TrainingError(
                f"{err}; training stopped at step {step} (once the file can be written, "
                "continue with --resume)"
            ) from None

    def describe(self, path: Path) -> str:
        return ckpt.describe(path) if path.is_file() else "none"


class StageClock(StepCallback):
    """Ends ``fit`` at the stage's last step; keeps that step's logs and the time taken."""

    def __init__(self, start_step: int, total_steps: int):
        super().__init__(start_step, total_steps)
        self.last_logs: dict[str, float] = {}
        self.seconds = 0.0

    def on_train_begin(self, logs=None):
        self._started = time.perf_counter()

    def on_step(self, step, logs):
        self.last_logs = in_tracker_order(self.model, logs)
        if step >= self.total_steps:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self._started


def _rate_key(stage: str) -> str:
    """The config key that sets ``stage``'s learning rate, for advice in errors."""
    if stage == "semi":
        return "semi.learning_rate (train.learning_rate when it is null)"
    return "train.learning_rate"


class NaNStop(StepCallback):
    """Raises TrainingError on a NaN or Inf loss, naming the step and the checkpoint kept.

    Keras's ``TerminateOnNaN`` only ends ``fit``: the checkpoint written at
    the end would then hold the broken state, and the user learns nothing.
    """

    def __init__(self, start_step, total_steps, stage: str, state: StageState):
        super().__init__(start_step, total_steps)
        self.stage = stage
        self.state = state

    def on_step(self, step, logs):
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingError(
                f"{self.stage}: the loss became {loss} at step {step}; stopped. "
                f"Last good checkpoint kept: {self.state.describe(self.state.paths.last)}. "
                f"Try a lower {_rate_key(self.stage)}."
            )


class DivergenceStop(StepCallback):
    """Stops a run that diverges with finite numbers (:class:`~.divergence.DivergenceGuard`).

    The loss is checked every step, the memory and batch-norm scales every
    ``log_every`` steps; the error names the step, the signal, the last
    checkpoint and the best validated one.
    """

    def __init__(self, start_step, total_steps, log_every: int, stage: str, state: StageState):
        super().__init__(start_step, total_steps)
        self.log_every = log_every
        self.stage = stage
        self.state = state

    def on_step(self, step, logs):
        guard = self.state.guard
        reason = guard.check_loss(step, logs["loss"])
        if not reason and due(step, self.log_every, self.total_steps):
            reason = guard.check_scales(scale_signals(self.model.online))
        if reason:
            paths = self.state.paths
            raise TrainingError(
                f"{self.stage}: training diverged at step {step}: {reason}; stopped. "
                f"Last checkpoint kept: {self.state.describe(paths.last)}; best validated "
                f"checkpoint: {self.state.describe(paths.best)}. "
                f"Try a lower {_rate_key(self.stage)} (or keep train.feature_scale_weight > 0)."
            )


class _Rate:
    """Steps per second since the previous call."""

    def __init__(self):
        self._since, self._steps = time.perf_counter(), 0

    def tick(self) -> None:
        self._steps += 1

    def take(self) -> float:
        now = time.perf_counter()
        rate = self._steps / max(now - self._since, 1e-9)
        self._since, self._steps = now, 0
        return rate


class ProgressLog(StepCallback):
    """A progress bar on a terminal; otherwise a line every ``log_every`` steps.

    The line holds the losses, the scale signals and the steps per second.

    Keras's ``ProgbarLogger`` counts steps per epoch and knows nothing of the
    resumed steps or of the scale signals.
    """

    def __init__(self, start_step, total_steps, log_every: int, stage: str, say: Callable):
        super().__init__(start_step, total_steps)
        self.log_every = log_every
        self.stage = stage
        self.say = say
        self.on_terminal = sys.stdout.isatty()

    def on_train_begin(self, logs=None):
        self.bar = keras.utils.Progbar(self.total_steps, verbose=1 if self.on_terminal else 0)
        self.bar.update(self.step)
        self.rate = _Rate()

    def on_step(self, step, logs):
        self.rate.tick()
        self.bar.update(step, list(logs.items()))
        if self.on_terminal or not due(step, self.log_every, self.total_steps):
            return
        values = {**in_tracker_order(self.model, logs), **scale_signals(self.model.online)}
        text = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        rate = self.rate.take()
        self.say(f"[{self.stage} step {step}/{self.total_steps}] {text}  {rate:.2f} steps/s")


def _panel(images: dict[str, tf.Tensor], count: int) -> tf.Tensor:
    """Side-by-side rows of the first ``count`` samples, [0, 1], for TensorBoard."""
    columns = [tf.clip_by_value((images[k][:count] + 1.0) / 2.0, 0.0, 1.0) for k in images]
    return tf.concat(columns, axis=2)


class TensorBoardLog(StepCallback):
    """TensorBoard ``logs/train``: losses, scales, steps/s every ``log_every`` steps; panels.

    Panels (rainy | output | clean, and the Eq. 9 mixtures of Fig. 8) show
    the network on ``panel_batch`` (four samples) at step 1 and every
    ``image_every`` steps, without drawing from the training's random stream.
    Keras's ``TensorBoard`` callback names scalars ``epoch_*`` by epoch and
    draws no images; these tags and steps are those of earlier runs.
    """

    def __init__(
        self, start_step, total_steps, logs_dir: Path, log_every, image_every, panel_batch
    ):
        super().__init__(start_step, total_steps)
        self.writer = tf.summary.create_file_writer(str(logs_dir / "train"))
        self.log_every = log_every
        self.image_every = image_every
        self.panel_batch = tf.nest.map_structure(lambda t: t[:4], panel_batch)

    def on_train_begin(self, logs=None):
        self.rate = _Rate()

    def on_step(self, step, logs):
        self.rate.tick()
        if due(step, self.log_every, self.total_steps):
            self.write_scalars(step, logs)
        if self.image_every and (step % self.image_every == 0 or step == 1):
            self.write_panels(step)

    def write_scalars(self, step, logs):
        with self.writer.as_default(step=step):
            for key, value in logs.items():
                tf.summary.scalar(f"loss/{key}", value)
            for key, value in scale_signals(self.model.online).items():
                tf.summary.scalar(f"scale/{key}", value)
            tf.summary.scalar("steps_per_second", self.rate.take())
            tf.summary.scalar("learning_rate", self.model.optimizer.learning_rate)

    def write_panels(self, step):
        seeds = self.model.mixture_seeds.state
        kept = seeds.numpy()
        _, images = self.model.compute_losses(self.panel_batch, training=False)
        seeds.assign(kept)
        with self.writer.as_default(step=step):
            columns = {k: images[k] for k in ("rainy", "output", "clean")}
            tf.summary.image("rainy | output | clean", _panel(columns, 4), max_outputs=4)
            if "mixture" in images:
                columns = {k: images[k] for k in ("mixture", "mixture_output")}
                tf.summary.image("mixture | output (Fig. 8)", _panel(columns, 8), max_outputs=8)

    def on_train_end(self, logs=None):
        self.writer.flush()


def selected_splits(splits, select_on: list[str]) -> list[str]:
    """The validation splits that choose the best checkpoint: ``select_on``, or all when empty.

    Raises:
        ConfigError: naming ``train.select_on`` and the splits there are, when
            it names a split that is not among them.
    """
    _check_split_names("train.select_on", select_on, splits)
    return list(select_on) or list(splits)


def _check_split_names(key: str, names, splits) -> None:
    missing = [name for name in names if name not in splits]
    if missing:
        raise ConfigError(
            f"{key}: no validation split {missing[0]!r}; the splits are "
            f"{', '.join(splits)} (data.test, data.holdout_rain, data.validation)"
        )


def _below_floor(scores: dict, select_floor: dict[str, float | str]) -> list[str]:
    """Why each ``train.select_floor`` split under its floor is there (``light 32.6 < 33.0``).

    A floor of ``"input"`` is the split's rainy input: the network must improve on it.
    """
    under = []
    for split, floor in select_floor.items():
        psnr = scores[split]["psnr_rgb"]
        if floor == FLOOR_INPUT:
            rainy = scores[split]["input_psnr_rgb"]
            if math.isinf(rainy):
                raise ConfigError(
                    f'train.select_floor.{split}: "{FLOOR_INPUT}" needs a rained split, '
                    f"and {split}'s inputs are rain-free: give a PSNR floor instead"
                )
            if not psnr > rainy:
                under.append(f"{split} {psnr:.2f} <= input {rainy:.2f}")
        elif not psnr >= floor:
            under.append(f"{split} {psnr:.2f} < {floor:.2f}")
    return under


class Validation(StepCallback):
    """PSNR/SSIM on the held-out splits every ``validate_every`` steps; keeps the best state.

    With weight averaging (``train.weight_average``) the averaged network is
    scored and saved as ``best.weights.h5``.

    Writes ``logs/validation`` scalars, prints a line, saves ``best.npz`` and
    ``best.weights.h5`` when the mean RGB PSNR of the ``select_on`` splits
    (all splits when empty) improves while every ``select_floor`` split is
    at or above its floor, and adds that mean as
    ``val_psnr_rgb`` to the logs of the epoch it ran in (for
    ``EarlyStopping(monitor="val_psnr_rgb", mode="max")`` and the like).
    Keras's own validation runs ``test_step`` over one dataset; this scores
    the deraining of whole test images in the paper's conventions.
    """

    def __init__(
        self,
        start_step,
        total_steps,
        every,
        derainer,
        splits,
        state,
        say,
        select_on=(),
        select_floor=None,
    ):
        super().__init__(start_step, total_steps)
        self.every = every
        self.derainer = derainer
        self.splits = splits
        self.select_on = selected_splits(splits, list(select_on))
        self.select_floor = dict(select_floor or {})
        _check_split_names("train.select_floor", self.select_floor, splits)
        self.state = state
        self.say = say
        self.writer = tf.summary.create_file_writer(str(state.paths.logs / "validation"))
        self.history: list[dict] = []
        self._epoch_psnr = None

    def on_step(self, step, logs):
        if due(step, self.every, self.total_steps):
            self.validate(step)

    def validate(self, step):
        with self.model.averaged_weights():
            self._score_and_keep(step)

    def _score_and_keep(self, step):
        scores = evaluate(self.derainer, self.splits, progress=False)["splits"]
        with self.writer.as_default(step=step):
            for split, values in scores.items():
                for key in ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y"):
                    tf.summary.scalar(f"{split}/{key}", values[key])
        self.history.append(
            {"step": step, **{f"{s}/{k}": v for s, d in scores.items() for k, v in d.items()}}
        )
        line = "  ".join(
            f"{split} {v['psnr_rgb']:.2f} dB / {v['ssim_rgb']:.3f} "
            f"(input {v['input_psnr_rgb']:.2f})"
            for split, v in scores.items()
        )
        self._epoch_psnr = float(np.mean([scores[s]["psnr_rgb"] for s in self.select_on]))
        if len(self.select_on) < len(scores):
            with self.writer.as_default(step=step):
                tf.summary.scalar("selection/psnr_rgb", self._epoch_psnr)
            line += f"  | chosen on {'+'.join(self.select_on)}: {self._epoch_psnr:.2f} dB"
        under = _below_floor(scores, self.select_floor)
        if under:
            line += f"  | not eligible (train.select_floor): {', '.join(under)}"
        self.say(f"[{self.state.meta['stage']} step {step}] validation: {line}")
        if not under and self._epoch_psnr > self.state.best_psnr:
            self.state.best_psnr = self._epoch_psnr
            self.state.save(self.state.paths.best, step)
            ckpt.save_weights(self.model.online, self.state.paths.best_weights)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._epoch_psnr is not None:
            logs["val_psnr_rgb"] = self._epoch_psnr
        self._epoch_psnr = None

    def on_train_end(self, logs=None):
        self.writer.flush()


class Checkpointing(StepCallback):
    """Full state to ``last.npz`` every ``every`` steps and at the end (atomic writes).

    The state is what an exact resume needs (both networks, memory, seeds,
    optimizer, step, validation and guard state); Keras's
    ``BackupAndRestore`` keeps weights and the epoch, not the data position
    or this file format that ``--resume`` reads. Nothing is written during a
    loss jump (it may be a divergence the guard is about to stop): a
    checkpoint due then is written at the first step after the jump ends.
    """

    def __init__(self, start_step, total_steps, every: int, state: StageState):
        super().__init__(start_step, total_steps)
        self.every = every
        self.state = state
        self.saved_step = start_step
        self.pending = False

    def on_step(self, step, logs):
        self.pending = self.pending or due(step, self.every, self.total_steps)
        if self.pending and not self.state.guard.suspicious:
            self.save(step)

    def save(self, step: int) -> None:
        self.state.save(self.state.paths.last, step)
        self.saved_step = step
        self.pending = False

    def on_epoch_end(self, epoch, logs=None):
        # fit is ending early (a user's EarlyStopping, say): keep where it
        # stopped. Not at on_train_end: by then fit has put the weight average
        # into the network (train.weight_average), and the state holds the raw weights.
        stopping = self.model.stop_training and self.step != self.saved_step
        if stopping and not self.state.guard.suspicious:
            self.save(self.step)


class LossWindow(StepCallback):
    """Logged losses are means over ``log_every`` steps: the trackers restart after each log step.

    Keras restarts them only when an epoch starts. The restart waits for the
    next step, so epoch-end logs still hold the last window's means.
    """

    def __init__(self, start_step, total_steps, log_every: int):
        super().__init__(start_step, total_steps)
        self.log_every = log_every
        self._restart = False

    def on_train_batch_begin(self, batch, logs=None):
        if self._restart:
            self.model.reset_metrics()
            self._restart = False

    def on_step(self, step, logs):
        self._restart = step % self.log_every == 0


class SignalStop(StepCallback):
    """SIGTERM or SIGINT (pre-emption, Ctrl-C): a checkpoint at the current step, then an error.

    Use as a context manager around ``fit``, which installs the handlers and
    restores the previous ones however ``fit`` ends.
    """

    def __init__(self, start_step, total_steps, checkpointing: Checkpointing):
        super().__init__(start_step, total_steps)
        self.checkpointing = checkpointing
        self.requested: str | None = None
        self._previous: dict = {}

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

    def on_step(self, step, logs):
        if self.requested:
            self.checkpointing.save(step)
            raise TrainingError(
                f"{self.requested} received at step {step}: checkpoint saved to "
                f"{self.checkpointing.state.paths.last}; continue with --resume"
            )
