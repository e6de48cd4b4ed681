"""Training runs end to end: outputs, resume, clear errors (train.py)."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest
from conftest import REPO, TINY_MODEL

from moss_tf.commands import train
from moss_tf.config import load_config
from moss_tf.train import checkpoints as ckpt
from moss_tf.train.run_dir import initial_weights
from moss_tf.train.stage import (
    TrainingError,
    build_trainer,
    learning_rate,
    precision_policy,
    run_stage,
    weight_average_momentum,
)

FAST = [
    *(f"model.{key}={value}" for key, value in TINY_MODEL.items()),
    "train.batch_size=2",
    "train.crop_size=32",
    "train.log_every=1",
    "train.validate_every=2",
    "train.checkpoint_every=2",
    "train.image_every=2",
    "semi.steps=null",  # both stages take train.steps
]


def config(*overrides):
    return load_config(REPO / "moss_tf" / "configs" / "demo.yaml", [*FAST, *overrides])


def state_arrays(path):
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files if k != "meta"}


STAGE_FILES = [
    "best.weights.h5",
    "checkpoints/best.npz",
    "checkpoints/last.npz",
    "config.yaml",
    "final.weights.h5",
    "logs/train/events",
    "logs/validation/events",
    "summary.json",
]
SUMMARY_KEYS = {"stage", "steps", "seconds", "best_mean_psnr_rgb", "last_losses", "validation"}
LOSS_TAGS = {"pretrain": ["grad_norm", "l_scale", "l_su", "loss"]}
LOSS_TAGS["semi"] = sorted([*LOSS_TAGS["pretrain"], "l_tv", "l_un"])
PANEL_TAGS = {"pretrain": ["rainy | output | clean"]}
PANEL_TAGS["semi"] = [*PANEL_TAGS["pretrain"], "mixture | output (Fig. 8)"]
SCALE_TAGS = ["learning_rate", "scale/bn_moving_variance_max", "scale/memory_item_norm"]
SCALE_TAGS.append("steps_per_second")


def run_files(run):
    """Files of a run directory, event files named by their folder only."""
    names = (str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    return sorted(re.sub(r"events\.out\.tfevents\..*", "events", name) for name in names)


def summary_tags(folder):
    """TensorBoard tag -> the steps it was written at."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: [e.step for e in events.Tensors(tag)] for tag in events.Tags()["tensors"]}


def test_pretrain_then_semi_leave_checkpoints_logs_and_config(tmp_path):
    run = tmp_path / "run"
    summary = run_stage(config("train.steps=2"), "pretrain", run, verbose=False)
    assert summary["steps"] == 2
    semi = run_stage(config("train.steps=2"), "semi", run, verbose=False)
    assert list(semi["last_losses"]) == ["loss", "l_su", "l_un", "l_tv", "l_scale", "grad_norm"]
    stages = ("pretrain", "semi")
    assert run_files(run) == sorted(
        ["config.yaml", "model.weights.h5", *(f"{s}/{n}" for s in stages for n in STAGE_FILES)]
    )
    for stage in stages:
        folder = run / stage
        assert set(json.loads((folder / "summary.json").read_text())) == SUMMARY_KEYS
        train_tags = summary_tags(folder / "logs" / "train")
        losses = [f"loss/{name}" for name in LOSS_TAGS[stage]]
        assert sorted(train_tags) == sorted([*losses, *PANEL_TAGS[stage], *SCALE_TAGS])
        assert all(steps == [1, 2] for steps in train_tags.values())  # log_every=1, panels at 1, 2
        validation_tags = summary_tags(folder / "logs" / "validation")
        assert sorted(validation_tags) == [
            f"{split}/{key}"
            for split in ("labeled_style", "target_style")
            for key in ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y")
        ]
        assert all(steps == [2] for steps in validation_tags.values())
        assert ckpt.read_meta(folder / "checkpoints" / "last.npz")["step"] == 2
    assert load_config(run / "config.yaml").model.memory_items == TINY_MODEL["memory_items"]
    network, cfg = ckpt.load_network(run_dir=run)
    assert cfg.model.base_channels == TINY_MODEL["base_channels"]
    final = network.get_weights()  # model.weights.h5 is the semi stage's best network
    assert len(final) == len(network.weights) and any(np.abs(w).sum() > 0 for w in final)


def test_cosine_schedule_decays_each_stage_over_its_own_steps_and_resumes_with_the_step():
    cosine = ("train.lr_schedule=cosine", "train.lr_min_fraction=0.1", "train.steps=10")
    cosine += ("train.learning_rate=2e-4",)
    cfg = config(*cosine, "semi.steps=4", "semi.learning_rate=1e-4")
    pretrain, semi = learning_rate(cfg, "pretrain"), learning_rate(cfg, "semi")
    assert [float(pretrain(step)) for step in (0, 5, 10, 20)] == pytest.approx(
        [2e-4, 2e-4 * 0.55, 2e-5, 2e-5]
    )
    assert [float(semi(step)) for step in (0, 4)] == pytest.approx([1e-4, 1e-5])
    # The schedule reads the optimizer's step count, which every checkpoint saves.
    trainer = build_trainer(cfg, "pretrain")
    assert any(v is trainer.optimizer.iterations for v in ckpt.state_variables(trainer))
    trainer.optimizer.iterations.assign(5)
    assert float(trainer.optimizer.learning_rate) == pytest.approx(2e-4 * 0.55)
    # The authors' recipe: one constant rate per stage.
    assert learning_rate(config("train.learning_rate=2e-4"), "pretrain") == 2e-4
    assert learning_rate(config("semi.learning_rate=5e-5"), "semi") == 5e-5


class Recorder(keras.callbacks.Callback):
    """A user's callback: records what ``fit`` shows it and stops after ``stop_after`` steps."""

    def __init__(self, stop_after):
        super().__init__()
        self.stop_after = stop_after
        self.batches, self.epochs = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(dict(logs))
        if len(self.batches) == self.stop_after:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(dict(logs))


def test_a_user_callback_sees_every_step_and_epoch_and_can_stop_the_stage(tmp_path):
    recorder = Recorder(stop_after=3)
    run = tmp_path / "run"
    summary = run_stage(
        config("train.steps=6"), "pretrain", run, verbose=False, callbacks=[recorder]
    )
    assert len(recorder.batches) == 3 and all("loss" in logs for logs in recorder.batches)
    assert len(recorder.epochs) == 2  # an epoch is train.validate_every=2 steps
    validated = summary["validation"][0]
    assert validated["step"] == 2
    psnrs = [value for key, value in validated.items() if key.endswith("/psnr_rgb")]
    assert recorder.epochs[0]["val_psnr_rgb"] == pytest.approx(np.mean(psnrs))
    assert "val_psnr_rgb" not in recorder.epochs[1]  # stopped at step 3, before validating
    assert summary["steps"] == 3
    assert ckpt.read_meta(run / "pretrain" / "checkpoints" / "last.npz")["step"] == 3


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    # Validation and image panels do not touch the training state; without them
    # the six short runs take a third of the time.
    quiet = ["train.validate_every=100", "train.image_every=0"]
    for stage, steps in (("pretrain", "train.steps"), ("semi", "semi.steps")):
        run_stage(config(f"{steps}=4", *quiet), stage, whole, verbose=False)
        run_stage(config(f"{steps}=2", *quiet), stage, split, verbose=False)
        run_stage(config(f"{steps}=4", *quiet), stage, split, resume=True, verbose=False)
        a = state_arrays(whole / stage / "checkpoints" / "last.npz")
        b = state_arrays(split / stage / "checkpoints" / "last.npz")
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(b[key], a[key], atol=1e-6, err_msg=f"{stage}: {key}")


def test_weight_averaging_saves_the_average_and_trains_the_raw_weights(tmp_path):
    # Momentum 1 - 1 / (0.5 * 4 steps) = 0.5.
    averaging = ["train.steps=4", "train.weight_average=0.5", "train.image_every=0"]
    validated, quiet, stopped = tmp_path / "validated", tmp_path / "quiet", tmp_path / "stopped"
    summary = run_stage(config(*averaging), "pretrain", validated, verbose=False)
    quiet_cfg = config(*averaging, "train.validate_every=100", "train.checkpoint_every=100")
    run_stage(quiet_cfg, "pretrain", quiet, verbose=False)
    # Stopped by a user's callback at step 3 (no checkpoint due), then resumed.
    run_stage(quiet_cfg, "pretrain", stopped, verbose=False, callbacks=[Recorder(stop_after=3)])
    run_stage(quiet_cfg, "pretrain", stopped, resume=True, verbose=False)
    assert [row["step"] for row in summary["validation"]] == [2, 4]
    # Scoring the average (steps 2 and 4) leaves the raw weights to train on,
    # and a stop keeps the raw weights for --resume.
    last = state_arrays(validated / "pretrain" / "checkpoints" / "last.npz")
    for run in (quiet, stopped):
        for key, value in state_arrays(run / "pretrain" / "checkpoints" / "last.npz").items():
            np.testing.assert_allclose(value, last[key], atol=1e-6, err_msg=f"{run.name}: {key}")
    paths = ckpt.read_meta(validated / "pretrain" / "checkpoints" / "last.npz")["paths"]
    saved = [last[f"v{i:05d}"] for i in range(len(paths))]
    averages = [a for path, a in zip(paths, saved, strict=True) if path.endswith("_average")]
    network, _ = ckpt.load_network(checkpoint=validated / "pretrain" / "final.weights.h5")
    raw = dict(zip((id(v) for v in network.variables), saved, strict=False))  # listed first
    assert len(averages) == len(network.trainable_weights)
    for weight, average in zip(network.trainable_weights, averages, strict=True):
        np.testing.assert_allclose(weight.numpy(), average, atol=1e-6, err_msg=weight.path)
        assert not np.allclose(raw[id(weight)], average), weight.path  # trained: raw != average


def test_weight_average_momentum_spans_a_fraction_of_each_stage():
    cfg = config("train.steps=4000", "semi.steps=1500", "train.weight_average=0.25")
    assert weight_average_momentum(cfg, "pretrain") == pytest.approx(0.999)
    assert weight_average_momentum(cfg, "semi") == pytest.approx(1 - 1 / 375)
    assert (
        weight_average_momentum(config("train.steps=2", "train.weight_average=0.25"), "pretrain")
        == 0
    )
    optimizer = build_trainer(cfg, "pretrain").optimizer
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.999)
    assert not build_trainer(config(), "pretrain").optimizer.use_ema  # off by default


def test_semi_without_a_pretrained_network_says_what_to_run(tmp_path):
    with pytest.raises(TrainingError, match="--stage pretrain"):
        run_stage(config(), "semi", tmp_path / "empty", verbose=False)


def test_a_new_run_keeps_the_previous_one(tmp_path):
    run = tmp_path / "run"
    run_stage(config("train.steps=2"), "pretrain", run, verbose=False)
    run_stage(config("train.steps=2"), "pretrain", run, verbose=False)
    kept = list(run.glob("pretrain.previous-*"))
    assert len(kept) == 1 and (kept[0] / "checkpoints" / "last.npz").is_file()


def test_resume_with_another_model_config_is_refused(tmp_path):
    run = tmp_path / "run"
    run_stage(config("train.steps=2"), "pretrain", run, verbose=False)
    with pytest.raises(ckpt.CheckpointError, match="another model configuration"):
        run_stage(
            config("train.steps=4", "model.base_channels=8"),
            "pretrain",
            run,
            resume=True,
            verbose=False,
        )


def test_command_line_rejects_unknown_keys_before_any_work(tmp_path, capsys):
    code = train.main(
        ["--stage", "pretrain", "--run-dir", str(tmp_path / "r"), "--set", "train.stepz=3"]
    )
    assert code == 2
    assert "train.stepz" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_command_line_rejects_bad_values_naming_the_key(tmp_path, capsys):
    code = train.main(
        ["--stage", "pretrain", "--run-dir", str(tmp_path / "r"), "--set", "train.crop_size=30"]
    )
    assert code == 2
    assert "train.crop_size" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "policy", "loss_scaling"),
    [("true", "mixed_float16", True), ("bfloat16", "mixed_bfloat16", False)],
)
def test_mixed_precision_runs_and_leaves_the_global_policy_as_it_was(
    tmp_path, setting, policy, loss_scaling
):
    import keras

    cfg = config("train.steps=2", f"train.mixed_precision={setting}")
    assert cfg.train.precision_policy == policy
    before = keras.mixed_precision.global_policy().name
    with precision_policy(cfg):  # as run_stage builds it
        trainer = build_trainer(cfg, "pretrain")
    assert keras.mixed_precision.global_policy().name == before
    assert trainer.online.compute_dtype == policy.removeprefix("mixed_")
    assert {w.dtype for w in trainer.online.weights} == {"float32"}
    is_scaled = isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert is_scaled == loss_scaling
    summary = run_stage(cfg, "pretrain", tmp_path / "r", verbose=False)
    assert np.isfinite(summary["last_losses"]["loss"])
    assert keras.mixed_precision.global_policy().name == before


def test_semi_starts_from_the_pretrained_network_evaluate_scored(tmp_path):
    # evaluate.py after stage pretrain scores pretrain/best.weights.h5 (via
    # model.weights.h5); semi must continue that network, not the last step's.
    stage = tmp_path / "run" / "pretrain"
    stage.mkdir(parents=True)
    for name in ("best.weights.h5", "final.weights.h5"):
        (stage / name).write_bytes(b"weights")
    assert initial_weights("semi", tmp_path / "run", False, None) == stage / "best.weights.h5"
    assert initial_weights("pretrain", tmp_path / "run", False, None) is None
