"""One training step of each stage changes what it should, and nothing else."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_MODEL

from moss_tf.config import SemiConfig
from moss_tf.nn.losses import l1_loss, total_variation
from moss_tf.nn.network import MOSSNet
from moss_tf.train.trainer import MOSSTrainer


def make_trainer(stage="pretrain", semi=None, model=None, initial=None):
    online = MOSSNet(**{**TINY_MODEL, **(model or {})}, name="online")
    online.build()
    if initial is not None:
        online.set_weights(initial)
    target = MOSSTrainer.copy_target(online) if stage == "semi" else None
    trainer = MOSSTrainer(online, stage, semi or SemiConfig(), target, seed=3)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.optimizer.build(online.trainable_variables)
    return trainer


def batch(rng, size=2, side=16):
    clean = rng.uniform(-1, 0.5, (size, side, side, 3)).astype("float32")
    rainy = np.clip(clean + rng.uniform(0, 0.5, clean.shape), -1, 1).astype("float32")
    unlabeled = rng.uniform(-1, 1, (size, side, side, 3)).astype("float32")
    return rainy, clean, unlabeled


def snapshot(network):
    # The target network is frozen (trainable=False), so select by position
    # the weights that are trainable in an online network of this architecture.
    reference = network
    if network.name == "target":
        reference = MOSSNet.from_config(network.get_config())
        reference.build()
    trainable = [i for i, w in enumerate(reference.weights) if w.trainable]
    return {
        "trainable": [network.weights[i].numpy().copy() for i in trainable],
        "memory": network.memory.items.numpy().copy(),
        "bn": [f.moving_mean.numpy().copy() for f in network.fusions],
    }


def changed(before, after):
    return [not np.array_equal(a, b) for a, b in zip(before, after, strict=True)]


def test_pretrain_steps_update_weights_memory_and_statistics(rng):
    trainer = make_trainer()
    rainy, clean, _ = batch(rng)
    before = snapshot(trainer.online)
    logs = trainer.train_step((tf.constant(rainy), tf.constant(clean)))
    assert set(logs) == {"loss", "l_su", "l_scale", "grad_norm"}
    after = snapshot(trainer.online)
    assert not np.array_equal(before["memory"], after["memory"])
    assert all(changed(before["bn"], after["bn"]))
    # The CBN condition convolutions start at zero (as released), so the
    # gradient reaches the deepest layers only once they have moved: after
    # three steps every trainable weight has changed.
    for _ in range(2):
        trainer.train_step((tf.constant(rainy), tf.constant(clean)))
    assert all(changed(before["trainable"], snapshot(trainer.online)["trainable"]))
    assert int(trainer.optimizer.iterations.numpy()) == 3


def test_pretrain_loss_is_the_l1_of_the_online_output(rng):
    trainer = make_trainer(model={"gate_keep_probability": 1.0})
    rainy, clean, _ = batch(rng)
    losses, images = trainer.compute_losses((rainy, clean), training=False)
    expected = np.abs(trainer.online(rainy).numpy() - clean).mean()
    np.testing.assert_allclose(float(losses["l_su"]), expected, rtol=1e-5)
    assert set(images) == {"rainy", "output", "clean"}


def test_semi_step_moves_the_target_by_eq7_and_keeps_its_statistics(rng):
    semi = SemiConfig(target_decay=0.9)
    trainer = make_trainer("semi", semi)
    rainy, clean, unlabeled = batch(rng)
    target_before = snapshot(trainer.target)
    logs = trainer.train_step(((rainy, clean), unlabeled))
    assert set(logs) == {"loss", "l_su", "l_un", "l_tv", "l_scale", "grad_norm"}
    online, target = snapshot(trainer.online), snapshot(trainer.target)
    for t0, o, t in zip(
        target_before["trainable"], online["trainable"], target["trainable"], strict=True
    ):
        np.testing.assert_allclose(t, 0.9 * t0 + 0.1 * o, atol=1e-6)
    np.testing.assert_allclose(
        target["memory"], 0.9 * target_before["memory"] + 0.1 * online["memory"], atol=1e-6
    )
    for before, after in zip(target_before["bn"], target["bn"], strict=True):
        np.testing.assert_array_equal(before, after)  # xi keeps the copied statistics


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_target_decay_extremes(rng, decay):
    trainer = make_trainer("semi", SemiConfig(target_decay=decay))
    rainy, clean, unlabeled = batch(rng)
    target_before = snapshot(trainer.target)
    trainer.train_step(((rainy, clean), unlabeled))
    expected = snapshot(trainer.online) if decay == 0.0 else target_before
    for a, b in zip(snapshot(trainer.target)["trainable"], expected["trainable"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_semi_loss_combines_the_terms_with_their_weights(rng):
    semi = SemiConfig(supervised_weight=2.0, unsupervised_weight=3.0, tv_weight=5.0)
    trainer = make_trainer("semi", semi)
    rainy, clean, unlabeled = batch(rng)
    losses, images = trainer.compute_losses(((rainy, clean), unlabeled), training=False)
    total = 2.0 * losses["l_su"] + 3.0 * losses["l_un"] + 5.0 * losses["l_tv"] + losses["l_scale"]
    np.testing.assert_allclose(float(losses["loss"]), float(total), rtol=1e-6)
    np.testing.assert_allclose(
        float(losses["l_un"]),
        float(l1_loss(images["mixture_output"], images["mixture"] * 0 + _targets(images))),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        float(losses["l_tv"]), float(total_variation(images["mixture_output"])), rtol=1e-5
    )


def _targets(images):
    pseudo, clean = images["pseudo_label"], images["clean"]
    return tf.concat([pseudo, pseudo, clean, clean], axis=0)


def test_noisy_mixtures_follow_eq9(rng):
    semi = SemiConfig(density_range=[0.5, 1.1])
    trainer = make_trainer("semi", semi)
    rainy, clean, unlabeled = batch(rng, size=3)
    predicted = trainer.online(rainy).numpy()
    pseudo = trainer.target(unlabeled).numpy()
    noisy, targets = trainer.noisy_mixtures(rainy, clean, predicted, unlabeled, pseudo)
    noisy, targets = noisy.numpy(), targets.numpy()
    assert noisy.shape == (12, 16, 16, 3) and noisy.min() >= -1 and noisy.max() <= 1
    np.testing.assert_array_equal(targets, np.concatenate([pseudo, pseudo, clean, clean]))
    backgrounds = np.concatenate([unlabeled, pseudo, rainy, clean])
    rains = np.concatenate([rainy - predicted] * 2 + [unlabeled - pseudo] * 2)
    # Each mixture is its background plus d * (one of the rain layers), d in [0.5, 1.1].
    for i in range(12):
        fits = []
        for rain in rains:
            mask = (np.abs(noisy[i]) < 0.999) & (np.abs(rain) > 0.05)  # not clipped
            if mask.sum() < 20:
                continue
            d = (noisy[i] - backgrounds[i])[mask] / rain[mask]
            fits.append(np.ptp(d) < 1e-3 and 0.5 - 1e-4 <= d.mean() <= 1.1 + 1e-4)
        assert any(fits), f"mixture {i} is no background + d * rain"


def test_without_self_training_there_are_no_mixtures(rng):
    trainer = make_trainer("semi", SemiConfig(self_training=False))
    rainy, clean, unlabeled = batch(rng)
    losses, images = trainer.compute_losses(((rainy, clean), unlabeled), training=False)
    assert float(losses["l_un"]) == 0.0
    assert "mixture" not in images
    tv = total_variation(trainer.online(unlabeled))
    expected = 10.0 * losses["l_su"] + 0.001 * tv
    np.testing.assert_allclose(float(losses["loss"]), float(expected), rtol=1e-4)


def test_without_tv_the_total_has_no_tv_term(rng):
    trainer = make_trainer("semi", SemiConfig(tv_weight=0.0))
    rainy, clean, unlabeled = batch(rng)
    losses, _ = trainer.compute_losses(((rainy, clean), unlabeled), training=False)
    np.testing.assert_allclose(
        float(losses["loss"]), float(10.0 * losses["l_su"] + losses["l_un"]), rtol=1e-6
    )


def test_without_memory_the_memory_is_neither_read_nor_averaged(rng):
    trainer = make_trainer("semi", model={"use_memory": False})
    rainy, clean, unlabeled = batch(rng)
    trainer.train_step(((rainy, clean), unlabeled))
    assert not trainer.online.memory.built
    assert all(p[1] is not trainer.online.memory for p in trainer.target_pairs())


@pytest.mark.parametrize("stage", ["pretrain", "semi"])
def test_two_replicas_train_like_one_with_the_same_global_batch(rng, stage, two_replicas):
    # Deterministic settings: no gate drop, no rain shuffle, fixed density.
    semi = SemiConfig(shuffle_rain=False, density_range=[1.0, 1.0])
    model = {"gate_keep_probability": 1.0}
    seed_net = MOSSNet(**TINY_MODEL, **model)
    seed_net.build()
    initial = seed_net.get_weights()
    steps = [batch(rng, size=4) for _ in range(3)]

    def data(step):
        rainy, clean, unlabeled = step
        return (rainy, clean) if stage == "pretrain" else ((rainy, clean), unlabeled)

    single = make_trainer(stage, semi, model, initial)
    for step in steps:
        single.train_step(tf.nest.map_structure(tf.constant, data(step)))

    strategy = two_replicas
    with strategy.scope():
        mirrored = make_trainer(stage, semi, model, initial)

    @tf.function
    def distributed_step(inputs):
        return strategy.run(mirrored.train_step, args=(inputs,))

    for step in steps:
        dataset = tf.data.Dataset.from_tensors(data(step))
        distributed_step(next(iter(strategy.experimental_distribute_dataset(dataset))))

    networks = [("online", single.online, mirrored.online)]
    if stage == "semi":
        networks.append(("target", single.target, mirrored.target))
    for name, one, two in networks:
        for a, b in zip(one.weights, two.weights, strict=True):
            np.testing.assert_allclose(b.numpy(), a.numpy(), atol=2e-5, err_msg=f"{name} {a.path}")
    assert not np.allclose(single.online.weights[0].numpy(), initial[0])


@pytest.mark.parametrize("stage", ["pretrain", "semi"])
def test_the_trainer_also_trains_with_keras_fit(rng, stage):
    trainer = make_trainer(stage)
    rainy, clean, unlabeled = batch(rng, size=2)
    element = (rainy, clean) if stage == "pretrain" else ((rainy, clean), unlabeled)
    before = trainer.online.get_weights()
    data = tf.data.Dataset.from_tensors(element).repeat(2)
    history = trainer.fit(data, shuffle=False, verbose=0)  # as training.py calls it
    expected = {"loss", "l_su"} if stage == "pretrain" else {"loss", "l_su", "l_un", "l_tv"}
    assert set(history.history) == {*expected, "l_scale", "grad_norm"}
    assert int(trainer.optimizer.iterations.numpy()) == 2
    after = trainer.online.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    scores = trainer.evaluate(tf.data.Dataset.from_tensors((rainy, clean)), verbose=0)
    assert np.isfinite(scores).all()
