"""Reproducing a paper table with one command (python -m moss_tf.paper.experiments)."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import REPO, TINY_MODEL

from moss_tf.config import ConfigError
from moss_tf.paper import experiments
from moss_tf.paper.report import format_duration, write_report
from moss_tf.paper.tables import SUPERVISED, TABLES

TINY = [
    *(f"model.{key}={value}" for key, value in TINY_MODEL.items()),
    "train.batch_size=2",
    "train.crop_size=16",
    # Scaled by the budget below to a validation at the end of each stage only.
    "train.validate_every=100000",
    "train.image_every=0",
]
# pretrain 1000 -> 10 steps (demo.yaml) or 400 -> 4 (the overrides below), semi 300 -> 3
BUDGET = "0.01"


def _rain200h_args(runs_root, train, test):
    """Rain200H's table on the ``train`` and ``test`` pair folders, tiny and short."""
    args = ["rain200h", "--budget", BUDGET, "--runs-root", str(runs_root)]
    data = [f"data.labeled.pairs={train}", f"data.test={test}"]
    for override in [*TINY, "train.steps=400", "semi.steps=300", *data]:
        args += ["--set", override]
    return args


def _scores(psnr: float) -> dict:
    """One scored split as ``evaluate()`` returns it (values made up: the report is tested)."""
    ours = {"psnr_rgb": psnr, "ssim_rgb": 0.8, "psnr_y": psnr + 1, "ssim_y": 0.85}
    rainy = {"psnr_rgb": 17.0, "ssim_rgb": 0.7, "psnr_y": 18.0, "ssim_y": 0.75}
    return {"n": 4, **ours, **{f"input_{k}": v for k, v in rainy.items()}}


def test_plan_shares_one_pretrain_between_rows_that_differ_only_in_stage_semi():
    plan = experiments.plan_table(
        TABLES["table3"], REPO / "moss_tf" / "configs" / "demo.yaml", budget=0.5, runs_root="r"
    )
    groups = {tuple(p.row.key for p in rows) for rows in plan.pretrain_groups().values()}
    # Memory and skip change the network, so their ablations pretrain on their own.
    assert groups == {
        ("basic",),
        ("wo_memory",),
        ("wo_self_training", "wo_tv", "ours"),
        ("wo_skip",),
    }
    assert plan.stage_steps() == {"pretrain": 500, "semi": 150, SUPERVISED: 150}
    assert plan.config_steps == {"pretrain": 1000, "semi": 300}


def test_every_sweep_value_reaches_its_row_config():
    plan = experiments.plan_table(
        TABLES["table4"], REPO / "moss_tf" / "configs" / "demo.yaml", runs_root="r"
    )
    decays = {p.row.key: p.cfg.model.memory_decay for p in plan.rows}
    assert decays["tau_0"] == 0.0 and decays["tau_0.9999"] == 0.9999 and decays["tau_1"] == 1.0
    assert len(plan.pretrain_groups()) == len(plan.rows)  # tau acts in pretrain too
    plan = experiments.plan_table(
        TABLES["table5"], REPO / "moss_tf" / "configs" / "demo.yaml", runs_root="r"
    )
    assert [p.cfg.semi.target_decay for p in plan.rows][:6] == [0, 0.9, 0.99, 0.999, 0.9999, 1]
    assert len(plan.pretrain_groups()) == 1


def test_the_demo_control_trains_as_many_steps_as_semi_at_semis_rate_from_the_same_network():
    plan = experiments.plan_table(
        TABLES["demo"],
        REPO / "moss_tf" / "configs" / "demo.yaml",
        overrides=["semi.learning_rate=0.0001"],
        budget=0.5,
        runs_root="r",
    )
    rows = {p.row.key: p for p in plan.rows}
    assert len(plan.pretrain_groups()) == 1  # all three rows start from one pretrained network
    control = experiments.supervised_control_config(rows["supervised"].cfg)
    assert control.train.steps == 150 and control.train.learning_rate == 0.0001
    assert rows["supervised"].weights.parts[-3:] == ("supervised", "pretrain", "final.weights.h5")
    assert rows["pretrained"].weights.parent.parent == rows["moss"].pretrain_dir


def test_time_left_comes_from_the_seconds_per_step_measured_so_far(tmp_path):
    plan = experiments.plan_table(
        TABLES["table3"], REPO / "moss_tf" / "configs" / "demo.yaml", budget=0.5, runs_root=tmp_path
    )
    assert experiments.estimate_seconds_left(plan) is None  # nothing measured yet
    shared = plan.rows[-1]  # "ours": its pretrain is shared with two other rows
    record = {"fingerprint": shared.pretrain_fingerprint, "steps": 500, "seconds": 250.0}
    (shared.pretrain_dir / "pretrain").mkdir(parents=True)
    (shared.pretrain_dir / "pretrain" / "done.json").write_text(json.dumps(record))
    # 3 pretrains of 500 steps left at 0.5 s/step; 6 semis of 150 steps, each
    # step estimated at SEMI_STEP_COST pretrain steps until one is measured.
    expected = 3 * 500 * 0.5 + 6 * 150 * 0.5 * experiments.SEMI_STEP_COST
    assert experiments.estimate_seconds_left(plan) == pytest.approx(expected)
    assert format_duration(expected) == "46 min 15 s"
    assert format_duration(3725) == "1 h 02 min"


def test_bad_budget_and_bad_override_are_named():
    with pytest.raises(ConfigError, match="--budget"):
        experiments.plan_table(
            TABLES["table3"], REPO / "moss_tf" / "configs" / "demo.yaml", budget=0
        )
    with pytest.raises(ConfigError, match=r"train\.stepz"):
        experiments.plan_table(
            TABLES["table3"],
            REPO / "moss_tf" / "configs" / "demo.yaml",
            overrides=["train.stepz=3"],
        )


def test_table3_report_puts_each_row_beside_the_papers_numbers(tmp_path):
    plan = experiments.plan_table(
        TABLES["table3"],
        REPO / "moss_tf" / "configs" / "demo.yaml",
        budget=0.01,
        runs_root=tmp_path,
    )
    results = {
        planned.row.key: {
            "splits": {"labeled_style": _scores(20.0 + i), "target_style": _scores(18.0 + i)},
            "overall": _scores(19.0 + i),
            "evaluation_seconds": 1.0,
        }
        for i, planned in enumerate(plan.rows)
    }
    markdown, paths = write_report(
        plan, results, wall_seconds=10.0, compute_seconds=experiments.compute_seconds(plan, results)
    )

    table = json.loads(paths[2].read_text())
    labels = [row["label"] for row in table["rows"]]
    assert labels == [row.label for row in TABLES["table3"].rows]
    assert table["budget"] == 0.01 and "budget 0.01" in table["budget_line"]
    ours = next(row for row in table["rows"] if row["key"] == "ours")
    assert ours["paper"]["dense"] == [22.91, 0.883]
    assert ours["ours"]["overall"]["psnr_rgb"] == 24.0
    assert set(ours["ours"]) == {"labeled_style", "target_style", "overall"}
    assert sorted(len(g["rows"]) for g in table["pretrains"].values()) == [1, 1, 1, 3]

    assert all(f"| {label} |" in markdown for label in labels)
    assert "| Ours | C | 25.00 / 0.800 | 23.00 / 0.800 | 24.00 / 0.800 |" in markdown
    assert "22.91 / 0.883" in markdown and "| rainy input | – | 17.00 / 0.700 |" in markdown
    with paths[1].open() as handle:
        lines = list(csv.DictReader(handle))
    assert {line["row"] for line in lines} == {row.key for row in TABLES["table3"].rows}
    assert paths[3].stat().st_size > 10_000


@pytest.mark.slow
def test_a_table_end_to_end_then_a_second_run_skips_finished_rows_and_resumes(tmp_path, capsys):
    from bench.bench_shards import generate_pairs

    runs = tmp_path / "runs"
    args = _rain200h_args(
        runs, generate_pairs(tmp_path / "train", 12), generate_pairs(tmp_path / "test", 2)
    )
    # Rain200H's four rows: two pretrain-only, each sharing its pretrain with a semi row.
    assert experiments.main(args) == 0
    first = capsys.readouterr().out

    table = json.loads((runs / "rain200h" / "rain200h.json").read_text())
    assert [row["key"] for row in table["rows"]] == [r.key for r in TABLES["rain200h"].rows]
    assert sorted(len(g["rows"]) for g in table["pretrains"].values()) == [2, 2]
    for row in table["rows"]:
        scores = row["ours"]["test"]
        assert 0 < scores["ssim_rgb"] <= 1 and scores["psnr_rgb"] > 5, row["key"]
    assert len(list(runs.glob("pretrain-*/pretrain/done.json"))) == 2
    assert first.count("stage pretrain:") == 2 and first.count("stage semi:") == 2
    markdown = (runs / "rain200h" / "rain200h.md").read_text()
    assert "| 40% labeled + unlabeled (MOSS) |" in markdown

    # Run again as after an interruption during the last row's stage semi.
    (runs / "rain200h" / "semi_40pct" / "result.json").unlink()
    (runs / "rain200h" / "semi_40pct" / "semi" / "done.json").unlink()
    assert experiments.main([*args, "--resume"]) == 0
    second = capsys.readouterr().out
    assert second.count("finished earlier: skipped") == 3
    assert "stage pretrain:" not in second
    assert second.count("stage semi:") == 1 and "[rain200h row 4/4 semi_40pct] stage semi" in second
    assert (runs / "rain200h" / "semi_40pct" / "result.json").is_file()


@pytest.mark.slow
def test_the_demo_table_scores_the_control_continued_from_the_pretrained_network(tmp_path, capsys):
    import numpy as np

    from moss_tf.train.checkpoints import load_network

    runs = tmp_path / "runs"
    args = ["demo", "--budget", BUDGET, "--runs-root", str(runs)]
    # A control that cannot move its weights: they must be the pretrained network's.
    for override in [*TINY, "semi.learning_rate=1e-12"]:
        args += ["--set", override]
    assert experiments.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("stage pretrain:") == 1 and "stage supervised: 3 steps" in out

    table = json.loads((runs / "demo" / "demo.json").read_text())
    rows = {row["key"]: row for row in table["rows"]}
    assert set(rows) == {"pretrained", "supervised", "moss"}
    for row in rows.values():
        assert 0 < row["ours"]["target_style"]["ssim_rgb"] <= 1, row["key"]
    record = json.loads((runs / "demo" / "supervised" / "pretrain" / "done.json").read_text())
    assert record["steps"] == 3

    def trainable(key):
        network, _ = load_network(checkpoint=rows[key]["weights"])
        return [w.numpy() for w in network.trainable_weights]

    pretrained, control = trainable("pretrained"), trainable("supervised")
    assert pretrained and len(pretrained) == len(control)
    for before, after in zip(pretrained, control, strict=True):
        np.testing.assert_allclose(after, before, atol=1e-6)


def test_the_transfer_table_runs_the_released_network_with_a_control_and_semi():
    plan = experiments.plan_table(TABLES["transfer"], None, runs_root="r")
    rows = {p.row.key: p for p in plan.rows}
    assert list(rows) == ["pretrained", "supervised", "moss"] and len(plan.pretrain_groups()) == 1
    cfg = rows["moss"].cfg
    assert (cfg.model.blocks_per_stage, cfg.model.memory_items) == (4, 512)  # released sizes
    control = experiments.supervised_control_config(rows["supervised"].cfg)
    assert control.train.steps == cfg.semi.steps
    assert control.train.learning_rate == cfg.semi.learning_rate
    # the unlabeled images have rain the labeled preset never draws (steeper than its angles)
    unlabeled, labeled = cfg.data.unlabeled, cfg.data.labeled
    assert unlabeled.rainy is None and unlabeled.clean == labeled.clean
    assert unlabeled.rain.angle[0] > labeled.rain.angle[1] + labeled.rain.streak_rotation[1]
