"""YAML configs: every shipped file loads; bad keys and values are named."""

from __future__ import annotations

import pytest
from conftest import REPO

from moss_tf.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    load_config,
    parse_override,
    save_config,
)

CONFIGS = sorted((REPO / "moss_tf" / "configs").rglob("*.yaml"))


@pytest.mark.parametrize(
    "path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "moss_tf" / "configs"))
)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.train.crop_size % 8 == 0


def test_paper_settings_are_the_papers():
    cfg = load_config(REPO / "moss_tf" / "configs" / "ddn_sirr.yaml")
    assert (cfg.train.crop_size, cfg.train.batch_size, cfg.train.learning_rate) == (256, 32, 2e-4)
    assert (cfg.semi.supervised_weight, cfg.semi.unsupervised_weight, cfg.semi.tv_weight) == (
        10.0,
        1.0,
        0.001,
    )
    assert cfg.model == ExperimentConfig().model  # the released network


def test_the_shipped_semi_config_is_release_sharp_with_an_equal_budget_control():
    sharp, semi = load_config("release_sharp"), load_config("release_sharp_semi")
    # The control (stage pretrain of this config) gets what stage semi gets.
    assert (semi.train.steps, semi.train.learning_rate) == (
        semi.semi.steps,
        semi.semi.learning_rate,
    )
    assert semi.data.labeled.rain.clean_probability == 0.5
    # Everything else is the pretrained network's recipe.
    assert (semi.model, semi.semi, semi.data.validation) == (
        sharp.model,
        sharp.semi,
        sharp.data.validation,
    )
    as_sharp = semi.data.labeled.rain.to_dict() | {"clean_probability": None}
    assert as_sharp == sharp.data.labeled.rain.to_dict() | {"clean_probability": None}
    assert semi.train.select_floor == sharp.train.select_floor
    assert sharp.train.select_floor == {
        "none": 35.0,
        "light": "input",
        "medium": "input",
        "heavy": "input",
    }


def test_ablations_switch_off_their_component():
    folder = REPO / "moss_tf" / "configs" / "ablations"
    assert not load_config(folder / "wo_memory.yaml").model.use_memory
    assert not load_config(folder / "wo_self_training.yaml").semi.self_training
    assert load_config(folder / "wo_tv.yaml").semi.tv_weight == 0.0
    assert not load_config(folder / "wo_skip.yaml").model.use_skip
    basic = load_config(folder / "basic.yaml")
    assert not (basic.model.use_memory or basic.model.use_skip or basic.semi.self_training)
    assert basic.semi.tv_weight == 0.0
    assert basic.data == load_config(REPO / "moss_tf" / "configs" / "ddn_sirr.yaml").data


def test_unknown_keys_are_named_with_their_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key train\.stepz"):
        load_config(path)
    path.write_text("trian:\n  steps: 3\n")
    with pytest.raises(ConfigError, match="unknown key trian"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.steps=many", "train.steps"),
        ("train.steps=0", "train.steps"),
        ("train.crop_size=60", "train.crop_size"),
        ("model.memory_decay=1.5", "model.memory_decay"),
        ("semi.density_range=[1.1, 0.5]", "semi.density_range"),
        ("model.use_memory=maybe", "model.use_memory"),
        ("train.learning_rate=-1", "train.learning_rate"),
        ("train.weight_average=-1", "train.weight_average"),
        ("train.mixed_precision=float8", "train.mixed_precision"),
    ],
)
def test_bad_values_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict({}, [override])


def test_overrides_parse_yaml_values():
    assert parse_override("train.steps=5") == {"train": {"steps": 5}}
    assert config_from_dict({}, ["train.learning_rate=1e-4"]).train.learning_rate == 1e-4
    cfg = config_from_dict(
        {}, ["semi.density_range=[0.2, 0.3]", "data.test=/x/y", "semi.steps=null"]
    )
    assert cfg.semi.density_range == [0.2, 0.3] and cfg.data.test == "/x/y"
    assert cfg.semi.steps is None
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.steps")


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_base_files_merge_section_by_section(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  steps: 7\n  batch_size: 4\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain:\n  steps: 9\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.name, cfg.train.steps, cfg.train.batch_size) == ("child", 9, 4)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(REPO / "moss_tf" / "configs" / "demo.yaml", ["train.steps=11"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_holdout_rain_splits_are_rain_mappings_or_null():
    def data(holdout_rain):
        values = {"data": {"labeled": {"clean": "x", "holdout": 2}, "holdout_rain": holdout_rain}}
        return config_from_dict(values).data

    splits = data({"none": None, "dense": {"preset": "heavy"}}).holdout_rain
    assert splits["none"] is None
    assert splits["dense"].density == 0.02  # the preset's value, resolved
    with pytest.raises(ConfigError, match=r"data\.holdout_rain\.dense\.density: must be in"):
        data({"dense": {"density": 2}})
    with pytest.raises(ConfigError, match=r"data\.holdout_rain\.dense\.densty"):
        data({"dense": {"densty": 0.01}})


def test_a_copied_config_can_start_from_a_shipped_one_by_name(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: paper.yaml\ntrain:\n  steps: 7\n")
    cfg = load_config(tmp_path / "mine.yaml")
    assert cfg.train.steps == 7
    assert cfg.model == load_config("paper").model
