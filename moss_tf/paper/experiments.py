"""Reproduce a table of the paper with one command: plan, train, evaluate, tabulate, plot.

::

    python -m moss_tf.paper.experiments table3 --config configs/ddn_sirr.yaml --budget 0.02
    python -m moss_tf.paper.experiments table4 --test /data/DDN-SIRR/test --resume
    python -m moss_tf.paper.experiments --help          # the tables, and every option

Each row of the table (see :mod:`moss_tf.paper.tables`) is the base config
with the row's overrides. Rows whose stage ``pretrain`` would be trained with
the same config share one pretrained network (a folder
``<runs-root>/pretrain-<fingerprint>``); each row trains its own stage
``semi`` in ``<runs-root>/<table>/<row>`` starting from it, then its final
network is evaluated on the test sets. A finished stage leaves
``<stage>/done.json`` and a finished row ``result.json``; running the command
again skips them, and ``--resume`` continues an interrupted stage from its
last checkpoint. The table (``<table>.md``, ``.csv``, ``.json`` and a bar plot
``.png``) is written to ``<runs-root>/<table>/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from moss_tf.config import ExperimentConfig, config_from_dict, find_config, load_config
from moss_tf.errors import ConfigError, MossError
from moss_tf.paper.report import budget_line, format_duration, write_report
from moss_tf.paper.tables import SUPERVISED, TABLES, Row, TableSpec

__all__ = ["Plan", "PlannedRow", "main", "plan_table", "run_plan", "scale_budget"]

DONE_FILE = "done.json"
RESULT_FILE = "result.json"
# A semi step costs about 4.5 pretrain steps (docs/benchmarks.md: 0.581 s vs
# 0.130 s on the demo network); used for the time estimate until a semi stage
# has been measured.
SEMI_STEP_COST = 4.5
_INTERVALS = ("log_every", "validate_every", "checkpoint_every", "image_every")


@dataclass(frozen=True)
class PlannedRow:
    """A table row, resolved: its config, where it trains, which pretrain it shares."""

    row: Row
    cfg: ExperimentConfig
    pretrain_cfg: ExperimentConfig
    """``cfg`` with the base config's ``semi`` section: what the shared pretrain saves."""
    run_dir: Path
    pretrain_dir: Path
    pretrain_fingerprint: str
    semi_fingerprint: str

    @property
    def weights(self) -> Path:
        """The network the row is evaluated with: the final one of its last stage."""
        stage = self.row.stages[-1]
        return self._stage_dir(stage) / stage_folder(stage) / "final.weights.h5"

    @property
    def logs(self) -> Path:
        """TensorBoard logs of the row's last stage."""
        stage = self.row.stages[-1]
        return self._stage_dir(stage) / stage_folder(stage) / "logs"

    @property
    def trained_in(self) -> Path:
        """The run directory holding the row's network (the shared pretrain for pretrain-only)."""
        return self._stage_dir(self.row.stages[-1])

    def _stage_dir(self, stage: str) -> Path:
        return self.pretrain_dir if stage == "pretrain" else self.run_dir


@dataclass(frozen=True)
class Plan:
    """Everything one invocation will do, decided before any training."""

    table: TableSpec
    config_path: Path
    overrides: tuple[str, ...]
    budget: float
    test: str | None
    runs_root: Path
    rows: tuple[PlannedRow, ...]
    config_steps: dict[str, int]
    """Steps of each stage in the config before ``budget`` scaled them."""

    @property
    def table_dir(self) -> Path:
        return self.runs_root / self.table.name

    def pretrain_groups(self) -> dict[Path, list[PlannedRow]]:
        """Shared pretrain folder -> the rows starting from it, in table order."""
        groups: dict[Path, list[PlannedRow]] = {}
        for planned in self.rows:
            groups.setdefault(planned.pretrain_dir, []).append(planned)
        return groups

    def pretrain_letter(self, planned: PlannedRow) -> str:
        """``A``, ``B``, ...: the name of a row's shared pretrain in the table."""
        return chr(ord("A") + list(self.pretrain_groups()).index(planned.pretrain_dir))

    def stage_steps(self) -> dict[str, int]:
        """Steps of each stage (equal for every row of a table); the control trains semi's."""
        from moss_tf.train.stage import stage_steps

        cfg = self.rows[0].cfg
        steps = {stage: stage_steps(cfg, stage) for stage in ("pretrain", "semi")}
        return {**steps, SUPERVISED: steps["semi"]}


def stage_folder(stage: str) -> str:
    """The folder a row's stage trains in: the control trains as stage ``pretrain``."""
    return "pretrain" if stage == SUPERVISED else stage


def supervised_control_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` for the equal-budget control: stage pretrain for semi's steps at semi's rate."""
    from moss_tf.train.stage import stage_steps

    train = dataclasses.replace(
        cfg.train,
        steps=stage_steps(cfg, "semi"),
        learning_rate=cfg.semi.learning_rate or cfg.train.learning_rate,
    )
    return dataclasses.replace(cfg, train=train)


# --------------------------------------------------------------------------- planning


def fingerprint(values: dict) -> str:
    """A short stable hash of a JSON-able mapping (run folder names, completion records)."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def scale_budget(cfg: ExperimentConfig, budget: float) -> ExperimentConfig:
    """``cfg`` with every stage's steps, and the log/validation/checkpoint/image
    intervals with them, multiplied by ``budget`` (at least 1 each; an
    ``image_every`` of 0 stays 0)."""
    from moss_tf.train.stage import stage_steps

    def scaled(value: int) -> int:
        return max(1, round(value * budget))

    intervals = {
        key: scaled(getattr(cfg.train, key)) if getattr(cfg.train, key) else 0 for key in _INTERVALS
    }
    train = dataclasses.replace(cfg.train, steps=scaled(cfg.train.steps), **intervals)
    semi = dataclasses.replace(cfg.semi, steps=scaled(stage_steps(cfg, "semi")))
    return dataclasses.replace(cfg, train=train, semi=semi)


def _row_config(base: ExperimentConfig, row: Row) -> ExperimentConfig:
    try:
        return config_from_dict(base.to_dict(), row.overrides)
    except ConfigError as err:
        raise ConfigError(f"table row {row.key!r}: {err}") from None


def _without(values: dict, *keys: str) -> dict:
    return {k: v for k, v in values.items() if k not in keys}


def plan_table(
    table: TableSpec,
    config_path: str | Path | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    budget: float = 1.0,
    runs_root: str | Path | None = None,
    test: str | None = None,
) -> Plan:
    """Resolve every row's config and run folders; nothing is trained.

    Args:
        table: one of :data:`moss_tf.paper.tables.TABLES`.
        config_path: base YAML (default: the table's, e.g. configs/ddn_sirr.yaml).
        overrides: ``KEY=VALUE`` for every row, applied before the row's own.
        budget: fraction (> 0) of every stage's steps to train, e.g. 0.02.
        runs_root: where runs and the table go (default
            ``runs/tables/<config name>[-budget<B>]``).
        test: a paired test folder replacing the config's test sets at evaluation.

    Raises:
        ConfigError: naming the file, row or key at fault.
    """
    if not budget > 0:
        raise ConfigError(f"--budget {budget}: must be > 0 (a fraction of the steps, e.g. 0.02)")
    config_path = find_config(config_path or table.default_config)
    base = load_config(config_path, list(overrides))
    if runs_root is None:
        suffix = "" if budget == 1 else f"-budget{budget:g}"
        runs_root = Path("runs") / "tables" / f"{base.name}{suffix}"
    runs_root = Path(runs_root)
    scaled_base = scale_budget(base, budget)
    rows = []
    for row in table.rows:
        cfg = scale_budget(_row_config(base, row), budget)
        values = _without(cfg.to_dict(), "name")
        # Stage pretrain does not read the semi section: rows differing only there share it.
        pretrain_fp = fingerprint(_without(values, "semi"))
        rows.append(
            PlannedRow(
                row=row,
                cfg=cfg,
                pretrain_cfg=dataclasses.replace(cfg, name=base.name, semi=scaled_base.semi),
                run_dir=runs_root / table.name / row.key,
                pretrain_dir=runs_root / f"pretrain-{pretrain_fp}",
                pretrain_fingerprint=pretrain_fp,
                semi_fingerprint=fingerprint(values),
            )
        )
    from moss_tf.train.stage import stage_steps

    full = {stage: stage_steps(base, stage) for stage in ("pretrain", "semi")}
    return Plan(table, config_path, tuple(overrides), budget, test, runs_root, tuple(rows), full)


# --------------------------------------------------------------------------- progress


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def stage_record(run_dir: Path, stage: str, stage_fingerprint: str) -> dict | None:
    """The completion record of a finished stage trained with this config, else None."""
    record = _read_json(run_dir / stage_folder(stage) / DONE_FILE)
    if record and record.get("fingerprint") == stage_fingerprint:
        return record
    return None


def _stage_jobs(plan: Plan) -> list[tuple[PlannedRow, str, Path, str]]:
    """Every distinct (row, stage, run dir, fingerprint) the plan trains, in order."""
    jobs, seen = [], set()
    for planned in plan.rows:
        for stage in planned.row.stages:
            run_dir, fp = (
                (planned.pretrain_dir, planned.pretrain_fingerprint)
                if stage == "pretrain"
                else (planned.run_dir, planned.semi_fingerprint)
            )
            if (run_dir, stage) not in seen:
                seen.add((run_dir, stage))
                jobs.append((planned, stage, run_dir, fp))
    return jobs


def _result_fingerprint(planned: PlannedRow, plan: Plan) -> str:
    return fingerprint(
        {"semi": planned.semi_fingerprint, "stages": planned.row.stages, "test": plan.test}
    )


def finished_result(planned: PlannedRow, plan: Plan) -> dict | None:
    """The row's ``result.json`` if it was made with this plan's config and test sets."""
    result = _read_json(planned.run_dir / RESULT_FILE)
    if result and result.get("fingerprint") == _result_fingerprint(planned, plan):
        return result
    return None


def estimate_seconds_left(plan: Plan) -> float | None:
    """Time the unfinished stages and evaluations will take, from the stages measured so far.

    Returns None while nothing has been measured yet.
    """
    spent: dict[str, list[float]] = {stage: [0.0, 0.0] for stage in plan.stage_steps()}
    pending: dict[str, int] = dict.fromkeys(plan.stage_steps(), 0)
    for _, stage, run_dir, fp in _stage_jobs(plan):
        record = stage_record(run_dir, stage, fp)
        if record:
            spent[stage][0] += record["seconds"]
            spent[stage][1] += record["steps"]
        else:
            pending[stage] += plan.stage_steps()[stage]
    rate = {stage: s / n for stage, (s, n) in spent.items() if n}
    if "pretrain" in rate:
        rate.setdefault("semi", rate["pretrain"] * SEMI_STEP_COST)
        rate.setdefault(SUPERVISED, rate["pretrain"])
    if any(steps and stage not in rate for stage, steps in pending.items()):
        return None
    evaluations = [finished_result(p, plan) for p in plan.rows]
    times = [r["evaluation_seconds"] for r in evaluations if r]
    per_evaluation = sum(times) / len(times) if times else 0.0
    left = sum(steps * rate.get(stage, 0.0) for stage, steps in pending.items())
    return left + per_evaluation * evaluations.count(None)


def compute_seconds(plan, results: dict[str, dict]) -> float:
    """Training and evaluation time recorded for the whole table (over all invocations)."""
    total = sum(r["evaluation_seconds"] for r in results.values())
    for _, stage, run_dir, fp in _stage_jobs(plan):
        record = stage_record(run_dir, stage, fp)
        total += record["seconds"] if record else 0.0
    return total


# --------------------------------------------------------------------------- running


def _say(message: str) -> None:
    print(message, flush=True)


def _same_config(saved: Path, cfg: ExperimentConfig) -> bool:
    """Whether the config a stage saved equals ``cfg`` (nothing saved counts as equal)."""
    if not saved.is_file():
        return True
    try:
        return yaml.safe_load(saved.read_text(encoding="utf-8")) == yaml.safe_load(
            yaml.safe_dump(cfg.to_dict())
        )
    except (OSError, yaml.YAMLError):
        return False


def _stage_config(planned: PlannedRow, stage: str) -> ExperimentConfig:
    """The config a row's stage trains with (the shared pretrain saves the base semi section)."""
    if stage == "pretrain":
        return planned.pretrain_cfg
    if stage == SUPERVISED:
        return supervised_control_config(planned.cfg)
    return planned.cfg


def run_stage_once(
    planned: PlannedRow, stage: str, run_dir: Path, stage_fp: str, resume: bool
) -> None:
    """Train one stage unless it is already finished with this config; record it when done."""
    import keras

    from moss_tf.train.stage import run_stage

    if stage_record(run_dir, stage, stage_fp):
        return
    cfg = _stage_config(planned, stage)
    folder = run_dir / stage_folder(stage)
    if resume and not _same_config(folder / "config.yaml", cfg):
        _say(f"note: {folder} was trained with another config; starting it again")
        resume = False
    pretrained = planned.pretrain_dir / "pretrain" / "final.weights.h5"
    init = None if stage == "pretrain" else pretrained
    keras.backend.clear_session()  # each stage builds its own networks and graphs
    started = time.perf_counter()
    summary = run_stage(cfg, stage_folder(stage), run_dir, resume=resume, init=init)
    record = {
        "fingerprint": stage_fp,
        "steps": summary["steps"],
        "seconds": time.perf_counter() - started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / DONE_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")


def evaluate_row(planned: PlannedRow, plan: Plan) -> dict:
    """Score the row's final network on the test sets; write and return ``result.json``."""
    import keras

    from moss_tf.data import build_test_sets
    from moss_tf.infer.derain import Derainer
    from moss_tf.infer.scoring import evaluate
    from moss_tf.train.checkpoints import load_network

    keras.backend.clear_session()
    started = time.perf_counter()
    network, _ = load_network(checkpoint=planned.weights)
    data = planned.cfg.data
    if plan.test:
        data = dataclasses.replace(data, test=plan.test)
    output_dir = planned.run_dir / "test_outputs"
    scores = evaluate(Derainer(network), build_test_sets(data), output_dir, progress=False)
    if not scores["splits"]:
        raise MossError(f"row {planned.row.key}: the test sets hold no images")
    result = {
        "fingerprint": _result_fingerprint(planned, plan),
        "row": planned.row.key,
        "weights": str(planned.weights),
        "evaluation_seconds": time.perf_counter() - started,
        **scores,
    }
    planned.run_dir.mkdir(parents=True, exist_ok=True)
    (planned.run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def run_row(planned: PlannedRow, plan: Plan, position: str, resume: bool) -> dict:
    """Train (what is not finished) and evaluate one row, saying where it is and the time left."""
    result = finished_result(planned, plan)
    if result:
        _say(f"[{plan.table.name} {position} {planned.row.key}] finished earlier: skipped")
        return result
    for job in _stage_jobs(dataclasses.replace(plan, rows=(planned,))):
        _, stage, run_dir, stage_fp = job
        if stage_record(run_dir, stage, stage_fp):
            continue
        shared = ""
        if stage == "pretrain":
            users = [p.row.key for p in plan.pretrain_groups()[planned.pretrain_dir]]
            shared = f", pretrain {plan.pretrain_letter(planned)} of rows {', '.join(users)}"
        _say(
            f"[{plan.table.name} {position} {planned.row.key}] stage {stage}: "
            f"{plan.stage_steps()[stage]} steps in {run_dir}{shared}; "
            f"table time left: {format_duration(estimate_seconds_left(plan))}"
        )
        run_stage_once(planned, stage, run_dir, stage_fp, resume)
    _say(f"[{plan.table.name} {position} {planned.row.key}] evaluating {planned.weights}")
    return evaluate_row(planned, plan)


def run_plan(plan: Plan, resume: bool = False) -> dict[str, dict]:
    """Run every row of the plan in order; returns row key -> result."""
    results = {}
    for index, planned in enumerate(plan.rows, start=1):
        position = f"row {index}/{len(plan.rows)}"
        results[planned.row.key] = run_row(planned, plan, position, resume)
    return results


# --------------------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    tables = "\n".join(
        f"  {name:<9} {t.source}: {t.title} (default --config {t.default_config})"
        for name, t in TABLES.items()
    )
    parser = argparse.ArgumentParser(
        prog="python -m moss_tf.paper.experiments",
        description="Train and evaluate every row of one of the paper's tables, then write "
        "the table (ours beside the paper's numbers) as .md, .csv, .json and a bar plot.",
        epilog=f"tables:\n{tables}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("table", choices=list(TABLES), metavar="TABLE", help="see the list below")
    parser.add_argument("--config", help="base experiment YAML (default: the table's)")
    parser.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="fraction of every stage's steps to train, e.g. 0.02 (default 1: the config's)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for every row, e.g. --set train.batch_size=8 (repeatable)",
    )
    parser.add_argument(
        "--runs-root", help="where the runs and the table go (default runs/tables/<config name>)"
    )
    parser.add_argument("--test", metavar="PATH", help="paired test folder to evaluate on")
    parser.add_argument(
        "--resume", action="store_true", help="continue interrupted stages from their checkpoint"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan (rows, shared pretrains) and stop"
    )
    return parser.parse_args(argv)


def describe_plan(plan: Plan) -> str:
    """The plan in a few lines: steps, budget, rows per shared pretrain."""
    lines = [
        f"{plan.table.source}: {plan.table.title}",
        budget_line(plan),
        f"runs: {plan.runs_root}",
    ]
    for folder, rows in plan.pretrain_groups().items():
        letter = plan.pretrain_letter(rows[0])
        keys = ", ".join(p.row.key for p in rows)
        lines.append(f"pretrain {letter} ({folder.name}): rows {keys}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from moss_tf.commands.common import start_tensorflow

    start_tensorflow()  # without the start-up lines that only say "no GPU here"

    try:
        plan = plan_table(
            TABLES[args.table], args.config, args.overrides, args.budget, args.runs_root, args.test
        )
        _say(describe_plan(plan))
        if args.dry_run:
            return 0
        started = time.perf_counter()
        results = run_plan(plan, resume=args.resume)
        markdown, written = write_report(
            plan, results, time.perf_counter() - started, compute_seconds(plan, results)
        )
    except MossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    _say("\n" + markdown)
    _say("written: " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
