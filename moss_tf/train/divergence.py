"""Signals of a training run going wrong without NaN, and the guard that stops it.

A MOSS network can diverge with every number finite: its encoder's feature
scale is invisible to the loss (batch norm and cosine scores), and when it
runs away the memory items and the batch-norm statistics follow, the loss
jumps and the network collapses (issue 10). :func:`scale_signals` reads the
scales off a network; :class:`DivergenceGuard` watches them and the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def scale_signals(network) -> dict[str, float]:
    """Scales a diverging run shows first, read from ``network``'s variables.

    Returns:
        ``memory_item_norm``: mean L2 norm of the memory items (N(0, 1)
        initial items of 96 channels have about 9.7);
        ``bn_moving_variance_max``: the largest moving variance of the CBN
        batch norms. A network without memory (``use_memory=False``, the
        "w/o Memory" ablation) never builds it and has no memory signal.
    """
    variances = [np.asarray(f.moving_variance) for f in network.fusions]
    signals = {"bn_moving_variance_max": float(max((v.max() for v in variances), default=0.0))}
    if network.memory.built:
        items = np.asarray(network.memory.items)
        signals["memory_item_norm"] = float(np.mean(np.linalg.norm(items, axis=-1)))
    return signals


@dataclass
class DivergenceGuard:
    """Decides that a run diverged: a loss jump that lasts, or a scale that explodes.

    The loss level is an exponential moving average of the loss; a step whose
    loss exceeds ``loss_factor`` times that level counts as a jump, and
    ``patience`` jumps in a row is divergence (single noisy batches are not).
    Jumping steps do not move the level, so a lasting jump cannot become the
    new normal. Scales (:func:`scale_signals`) above ``scale_limit`` are
    divergence at once.

    Args:
        loss_factor: how many times its running level the loss must exceed.
            0 turns the loss check off.
        patience: consecutive jumping steps that make a divergence.
        warmup: steps before the loss check starts (the level settles first).
        scale_limit: largest allowed memory-item norm and BN moving variance.
            0 turns the scale check off.
        smoothing: weight of the newest loss in the running level.
    """

    loss_factor: float = 3.0
    patience: int = 20
    warmup: int = 50
    scale_limit: float = 1e6
    smoothing: float = 0.02
    level: float | None = None
    streak: int = 0
    seen: int = 0

    def check_loss(self, step: int, loss: float) -> str | None:
        """The reason the run diverged at ``step``, or None while it is healthy."""
        self.seen += 1
        if not self.loss_factor:
            return None
        warm = self.level is not None and self.seen > self.warmup
        if warm and loss > self.loss_factor * self.level:
            self.streak += 1
            if self.streak >= self.patience:
                return (
                    f"the loss stayed above {self.loss_factor:g}x its running level "
                    f"({self.level:.4g}) for {self.streak} steps (now {loss:.4g})"
                )
            return None
        self.streak = 0
        self.level = (
            loss if self.level is None else self.level + self.smoothing * (loss - self.level)
        )
        return None

    def check_scales(self, signals: dict[str, float]) -> str | None:
        """The reason the run diverged, if a scale in ``signals`` exploded."""
        if not self.scale_limit:
            return None
        for name, value in signals.items():
            if not math.isfinite(value) or value > self.scale_limit:
                return f"{name} reached {value:.4g} (limit {self.scale_limit:g})"
        return None

    @property
    def suspicious(self) -> bool:
        """Whether the loss is in a jump right now (a checkpoint now may be bad)."""
        return self.streak > 0

    def state(self) -> dict:
        """What a checkpoint keeps so a resumed run judges as an uninterrupted one."""
        return {"level": self.level, "streak": self.streak, "seen": self.seen}

    def restore(self, state: dict | None) -> None:
        if state:
            self.level, self.streak, self.seen = state["level"], state["streak"], state["seen"]
