"""MOSSTrainer: the training logic around a pure :class:`~moss_tf.nn.network.MOSSNet`.

Stage ``pretrain`` (supplementary Algorithm 1)::

    L_SU = mean |f_theta(X_L) - Y_L|

Stage ``semi`` (Algorithm 2, docs/method.md §2): pseudo-labels from the EMA target
network (in inference mode with the released per-batch memory update, see
:meth:`MOSSTrainer.copy_target`), Eq. (9) noisy mixtures built in the graph, and
``L_total = l1 * L_SU + l2 * L_UN + l3 * L_TV``; after every optimizer step
the target follows the online network by Eq. (7) over the trainable weights
and the memory items (its batch-norm statistics stay as copied).

All images are float32 NHWC in [-1, 1].
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from moss_tf.config import SemiConfig
from moss_tf.nn.losses import feature_scale_penalty, l1_loss, total_variation
from moss_tf.nn.network import MOSSNet

STAGES = ("pretrain", "semi")


def _num_replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


class MOSSTrainer(keras.Model):
    """Wraps the online network (and, for ``semi``, the target network).

    ``train_step`` takes ``(rainy, clean)`` for ``pretrain`` and
    ``((rainy, clean), unlabeled)`` for ``semi``; ``test_step`` takes
    ``(rainy, clean)``. Both return the tracked loss terms.

    Args:
        online: the network being optimised (theta).
        stage: ``"pretrain"`` or ``"semi"``.
        semi: stage ``semi`` settings (weights lambda1-3, target decay v,
            density range, switches). Defaults to :class:`SemiConfig`.
        target: the EMA target network (xi) for ``semi``; it must have the
            online network's architecture. Build it with :meth:`copy_target`.
        seed: seed of the mixture randomness (rain shuffle, densities).
        feature_scale_limit: RMS above which an encoder stage's features are
            pulled back (:func:`~moss_tf.nn.losses.feature_scale_penalty`).
        feature_scale_weight: weight of that penalty in the total loss; 0 is
            the authors' recipe. It is zero while every scale is under the
            limit, so it only acts where the released recipe diverges.

    Example:
        >>> trainer = MOSSTrainer(net, "pretrain")
        >>> trainer.compile(optimizer=keras.optimizers.Adam(2e-4))
        >>> logs = trainer.train_step((rainy, clean))
    """

    def __init__(
        self,
        online: MOSSNet,
        stage: str = "pretrain",
        semi: SemiConfig | None = None,
        target: MOSSNet | None = None,
        seed: int | None = None,
        feature_scale_limit: float = 10.0,
        feature_scale_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if stage == "semi" and target is None:
            raise ValueError("stage 'semi' needs a target network (MOSSTrainer.copy_target)")
        self.online = online
        self.stage = stage
        self.semi = semi or SemiConfig()
        self.target = target
        if target is not None:
            target.trainable = False
        self.mixture_seeds = keras.random.SeedGenerator(seed)
        self.feature_scale_limit = feature_scale_limit
        self.feature_scale_weight = feature_scale_weight
        names = ["loss", "l_su"] if stage == "pretrain" else ["loss", "l_su", "l_un", "l_tv"]
        if feature_scale_weight:
            names.append("l_scale")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in [*names, "grad_norm"]}

    @staticmethod
    def copy_target(online: MOSSNet) -> MOSSNet:
        """A deep copy of ``online`` (weights, memory, batch-norm statistics) named ``target``.

        The target's memory update at inference is the whole batch's
        (``inference_memory="batch"``, whatever the online network's), so its
        pseudo-labels ``f_xi(X_U)`` are those of the released training code,
        which calls the target in eval mode on the unlabeled batch.
        """
        config = {**online.get_config(), "name": "target", "inference_memory": "batch"}
        target = MOSSNet.from_config(config)
        target.build()
        target.set_weights(online.get_weights())
        return target

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        return self.online(images, training=training)

    # ------------------------------------------------------------------ losses

    def noisy_mixtures(self, rainy, clean, predicted, unlabeled, pseudo):
        """Eq. (9): ``(X_N, Y_hat)`` from labeled and unlabeled batches of size B.

        Rain layers ``R_L = X_L - Y_hat_L`` and ``R_U = X_U - Y_P`` (no
        gradient) are shuffled over the 4B mixtures (when ``semi.shuffle_rain``)
        and added with per-sample density ``d ~ U[low, high]`` onto the
        backgrounds ``[X_U, Y_P, X_L, Y_L]``; targets are ``[Y_P, Y_P, Y_L, Y_L]``.
        """
        rain_labeled = tf.stop_gradient(rainy - predicted)
        rain_unlabeled = unlabeled - pseudo
        backgrounds = tf.concat([unlabeled, pseudo, rainy, clean], axis=0)
        rains = tf.concat([rain_labeled, rain_labeled, rain_unlabeled, rain_unlabeled], axis=0)
        count = tf.shape(backgrounds)[0]
        if self.semi.shuffle_rain:
            order = tf.argsort(keras.random.uniform((count,), seed=self.mixture_seeds))
            rains = tf.gather(rains, order)
        low, high = self.semi.density_range
        density = keras.random.uniform((count, 1, 1, 1), low, high, seed=self.mixture_seeds)
        noisy = tf.clip_by_value(backgrounds + density * rains, -1.0, 1.0)
        targets = tf.concat([pseudo, pseudo, clean, clean], axis=0)
        return noisy, targets

    def compute_losses(self, data, training=True):
        """The loss terms of the current stage; ``total`` is what is optimised."""
        if self.stage == "pretrain":
            rainy, clean = data
            predicted, features = self.online.call_with_features(rainy, training=training)
            l_su = l1_loss(predicted, clean)
            losses = self._with_scale_penalty({"loss": l_su, "l_su": l_su}, features)
            return losses, {"rainy": rainy, "output": predicted, "clean": clean}

        (rainy, clean), unlabeled = data
        semi = self.semi
        predicted, features = self.online.call_with_features(rainy, training=training)
        l_su = l1_loss(predicted, clean)
        images = {"rainy": rainy, "output": predicted, "clean": clean}
        if semi.self_training:
            pseudo = tf.stop_gradient(self.target(unlabeled, training=False))
            noisy, targets = self.noisy_mixtures(rainy, clean, predicted, unlabeled, pseudo)
            restored, mixture_features = self.online.call_with_features(noisy, training=training)
            features = features + mixture_features
            l_un = l1_loss(restored, targets)
            images.update(
                unlabeled=unlabeled, pseudo_label=pseudo, mixture=noisy, mixture_output=restored
            )
        else:  # "w/o Self-Training": L_SU plus TV of the outputs on X_U
            restored, unlabeled_features = self.online.call_with_features(
                unlabeled, training=training
            )
            features = features + unlabeled_features
            l_un = tf.zeros_like(l_su)
        l_tv = total_variation(restored)
        total = (
            semi.supervised_weight * l_su + semi.unsupervised_weight * l_un + semi.tv_weight * l_tv
        )
        losses = {"loss": total, "l_su": l_su, "l_un": l_un, "l_tv": l_tv}
        return self._with_scale_penalty(losses, features), images

    def _with_scale_penalty(self, losses, features):
        """Adds ``feature_scale_weight * L_scale`` to ``losses["loss"]`` (issue 10)."""
        if not self.feature_scale_weight:
            return losses
        l_scale = feature_scale_penalty(features, self.feature_scale_limit)
        return {
            **losses,
            "loss": losses["loss"] + self.feature_scale_weight * l_scale,
            "l_scale": l_scale,
        }

    # ------------------------------------------------------------------ steps

    def train_step(self, data):
        online_weights = self.online.trainable_variables
        with tf.GradientTape() as tape:
            losses, _ = self.compute_losses(data, training=True)
            # Gradients are summed over replicas: scale so the step follows the
            # mean over the global batch, as with one device.
            scaled = self.optimizer.scale_loss(losses["loss"] / _num_replicas())
        gradients = tape.gradient(scaled, online_weights)
        self.optimizer.apply(gradients, online_weights)
        if self.stage == "semi":
            self.update_target()
        # This replica's share of the global gradient (scaled by 1/replicas).
        grad_norm = tf.linalg.global_norm(gradients) * _num_replicas()
        return self._track({**losses, "grad_norm": grad_norm})

    def test_step(self, data):
        rainy, clean = data
        predicted = self.online(rainy, training=False)
        l_su = l1_loss(predicted, clean)
        return self._track({"loss": l_su, "l_su": l_su})

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds a model under a strategy from a batch of an extra
        # iterator, all-reduced; that fails for the per-worker datasets of
        # MultiWorkerMirroredStrategy. Nothing needs it once the optimizer is
        # built (moss_tf.train.stage.build_trainer builds everything before fit).
        if self.optimizer is None or not self.optimizer.built:
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _track(self, losses):
        for name, value in losses.items():
            self.trackers[name].update_state(value)
        results = {name: self.trackers[name].result() for name in losses}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras's fit averages step logs over workers along axis 0, which
            # a scalar lacks; the average of these comes back a scalar.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    # ------------------------------------------------------------------ EMA

    def target_pairs(self):
        """(target variable, online variable) pairs that Eq. (7) averages."""
        averaged = {id(w) for w in self.online.trainable_weights}
        if self.online.use_memory:
            averaged.add(id(self.online.memory.items))
        # Both networks list their weights in the same order (same architecture).
        return [
            (target, online)
            for target, online in zip(self.target.weights, self.online.weights, strict=True)
            if id(online) in averaged
        ]

    def update_target(self):
        """Eq. (7): ``xi <- v * xi + (1 - v) * theta``."""
        decay = self.semi.target_decay

        def ema(target, online):
            target.assign(decay * target + (1.0 - decay) * online)

        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            for target, online in self.target_pairs():
                ema(target, online)
            return

        # Mirrored variables are updated in cross-replica context, per device.
        def cross_replica(strategy):
            for target, online in self.target_pairs():
                strategy.extended.update(
                    target.value,
                    lambda t, o: t.assign(decay * t + (1.0 - decay) * o),
                    args=(online.value,),
                    group=False,
                )

        ctx.merge_call(cross_replica)

    # ------------------------------------------------------ weight averaging

    @contextlib.contextmanager
    def averaged_weights(self):
        """Inside the block the online network holds the optimizer's weight average.

        With ``train.weight_average`` (the optimizer's ``use_ema``) validation and
        the saved networks use the average; training steps the raw weights,
        which are put back on leaving. Without averaging (or before the first
        step) the block changes nothing. ``fit`` itself leaves the average in
        the network when it ends (Keras's ``finalize_variable_values``).
        """
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if not getattr(optimizer, "use_ema", False) or int(optimizer.iterations) == 0:
            yield
            return
        weights = self.online.trainable_variables
        raw = [w.numpy() for w in weights]
        optimizer.finalize_variable_values(weights)
        try:
            yield
        finally:
            for weight, value in zip(weights, raw, strict=True):
                weight.assign(value)
