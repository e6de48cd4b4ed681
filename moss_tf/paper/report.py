"""Writing a reproduced table: Markdown, CSV, JSON and a bar plot, ours beside the paper's.

Used by :mod:`moss_tf.paper.experiments`; the inputs are its :class:`Plan` and the
``result.json`` of every row (the output of :func:`moss_tf.infer.scoring.evaluate`).
PSNR / SSIM are the paper's convention, PSNR-Y / SSIM-Y the community's
(docs/method.md §4); the paper's numbers exist in its convention only.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from pathlib import Path

from moss_tf.infer.metrics import RESULT_KEYS
from moss_tf.paper.tables import PAPER_RAINY_INPUT

__all__ = ["budget_line", "format_duration", "write_report"]

ROW_FIELDS = ("table", "row", "label", "pretrain", "split")
CSV_FIELDS = (
    *ROW_FIELDS,
    *RESULT_KEYS,  # n, ours in both conventions, the rainy input in both
    "paper_psnr_rgb",
    "paper_ssim_rgb",
    "run_dir",
    "logs",
)


def budget_line(plan) -> str:
    """One sentence on the training budget, printed with every table."""
    steps, full = plan.stage_steps(), plan.config_steps
    cfg = plan.rows[0].cfg
    line = (
        f"budget {plan.budget:g}: pretrain {steps['pretrain']} steps, semi {steps['semi']} steps "
        f"per row (the config's {full['pretrain']} / {full['semi']}), batch "
        f"{cfg.train.batch_size}, crops {cfg.train.crop_size}x{cfg.train.crop_size}"
    )
    if plan.budget < 1:
        line += (
            "; a reduced budget: not the paper's training, so compare the rows with each "
            "other rather than with the paper's numbers"
        )
    return line


def _our_splits(results: dict[str, dict]) -> list[str]:
    """Test splits of the results, in order, plus ``overall`` when there are several."""
    splits: list[str] = []
    for result in results.values():
        splits += [s for s in result["splits"] if s not in splits]
    return [*splits, "overall"] if len(splits) > 1 else splits


def _paper_splits(plan) -> list[str]:
    splits: list[str] = []
    for planned in plan.rows:
        splits += [s for s in planned.row.paper if s not in splits]
    return splits


def _scores(result: dict, split: str) -> dict | None:
    return result.get("overall") if split == "overall" else result["splits"].get(split)


def _pair(first: float | None, second: float | None) -> str:
    if first is None or second is None:
        return "–"
    return f"{first:.2f} / {second:.3f}"


def _link(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def _machine() -> str:
    import tensorflow as tf

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"TensorFlow {tf.__version__}, Python {platform.python_version()}"
    )


def format_duration(seconds: float | None) -> str:
    """``"1 h 05 min"``, ``"3 min 20 s"``, ``"42 s"``, or ``"unknown yet"`` for None."""
    if seconds is None:
        return "unknown yet"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def table_data(plan, results: dict[str, dict], wall_seconds: float, compute_seconds: float) -> dict:
    """Everything the table shows, as one JSON-able mapping."""
    ours_splits = _our_splits(results)
    rows = []
    for planned in plan.rows:
        result = results[planned.row.key]
        rows.append(
            {
                "key": planned.row.key,
                "label": planned.row.label,
                "overrides": list(planned.row.overrides),
                "stages": list(planned.row.stages),
                "pretrain": plan.pretrain_letter(planned),
                "run_dir": str(planned.trained_in),
                "logs": str(planned.logs),
                "weights": str(planned.weights),
                "ours": {s: _scores(result, s) for s in ours_splits},
                "paper": {s: list(v) for s, v in planned.row.paper.items()},
            }
        )
    first = next(iter(results.values()))
    return {
        "table": plan.table.name,
        "title": plan.table.title,
        "source": plan.table.source,
        "note": plan.table.note,
        "config": str(plan.config_path),
        "overrides": list(plan.overrides),
        "budget": plan.budget,
        "budget_line": budget_line(plan),
        "steps": plan.stage_steps(),
        "config_steps": plan.config_steps,
        "test": plan.test,
        "measured": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": _machine(),
        "wall_seconds": wall_seconds,
        "compute_seconds": compute_seconds,
        "pretrains": {
            plan.pretrain_letter(members[0]): {
                "dir": str(folder),
                "rows": [p.row.key for p in members],
            }
            for folder, members in plan.pretrain_groups().items()
        },
        "rows": rows,
        "rainy_input": {
            "ours": {
                s: {k[len("input_") :]: v for k, v in scores.items() if k.startswith("input_")}
                for s in ours_splits
                if (scores := _scores(first, s))
            },
            "paper": {s: list(v) for s, v in PAPER_RAINY_INPUT.items() if s in _paper_splits(plan)},
        },
    }


def _markdown_header(data: dict, splits: list[str], paper: list[str]) -> list[str]:
    overrides = "".join(f" --set {o}" for o in data["overrides"])
    lines = [
        f"## {data['source'][:1].upper()}{data['source'][1:]}: {data['title']}",
        "",
        f"- config: `{data['config']}`{overrides}; {data['budget_line']}",
        f"- test splits: {', '.join(splits)}; the paper's: {', '.join(paper) or 'none given'}",
        "- PSNR / SSIM: paper convention (RGB uint8, scikit-image SSIM); PSNR-Y / SSIM-Y: "
        "community convention (MATLAB Y channel, Gaussian SSIM). Each row is evaluated with "
        "the final network of its last stage.",
        f"- measured {data['measured']} on {data['machine']}; training and evaluation "
        f"{format_duration(data['compute_seconds'])} in all",
    ]
    for letter, group in data["pretrains"].items():
        folder = Path(group["dir"]).name
        lines.append(f"- pretrain {letter} (`{folder}`) shared by: {', '.join(group['rows'])}")
    if data["note"]:
        lines.append(f"- {data['note']}")
    return [*lines, ""]


def _markdown_rows(data: dict, splits: list[str], paper: list[str], table_dir: Path) -> list[str]:
    head = ["row", "pretrain"]
    head += [f"{s} PSNR / SSIM" for s in splits] + [f"{s} PSNR-Y / SSIM-Y" for s in splits]
    head += [f"paper {s} PSNR / SSIM" for s in paper] + ["run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in data["rows"]:
        ours = [row["ours"][s] or {} for s in splits]
        cells = [row["label"], row["pretrain"]]
        cells += [_pair(o.get("psnr_rgb"), o.get("ssim_rgb")) for o in ours]
        cells += [_pair(o.get("psnr_y"), o.get("ssim_y")) for o in ours]
        cells += [_pair(*row["paper"].get(s, (None, None))) for s in paper]
        run, logs = (_link(Path(row[k]), table_dir) for k in ("run_dir", "logs"))
        cells.append(f"[run]({run}) · [logs]({logs})")
        lines.append("| " + " | ".join(cells) + " |")
    rainy = data["rainy_input"]
    ours = [rainy["ours"].get(s, {}) for s in splits]
    cells = ["rainy input", "–"]
    cells += [_pair(o.get("psnr_rgb"), o.get("ssim_rgb")) for o in ours]
    cells += [_pair(o.get("psnr_y"), o.get("ssim_y")) for o in ours]
    cells += [_pair(*rainy["paper"].get(s, (None, None))) for s in paper] + [""]
    lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(data: dict, table_dir: Path) -> str:
    """The table as Markdown: a header saying budget, splits and conventions, then the rows."""
    splits = list(data["rows"][0]["ours"])
    paper = list(dict.fromkeys(s for row in data["rows"] for s in row["paper"]))
    lines = _markdown_header(data, splits, paper) + _markdown_rows(data, splits, paper, table_dir)
    return "\n".join(lines) + "\n"


def write_csv(data: dict, path: Path) -> None:
    """One line per row and test split (ours and the paper's splits alike)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in data["rows"]:
            for split in dict.fromkeys([*row["ours"], *row["paper"]]):
                ours = row["ours"].get(split) or {}
                paper = row["paper"].get(split, [None, None])
                writer.writerow(
                    {
                        "table": data["table"],
                        "row": row["key"],
                        "label": row["label"],
                        "pretrain": row["pretrain"],
                        "split": split,
                        **{k: ours.get(k) for k in RESULT_KEYS},
                        "paper_psnr_rgb": paper[0],
                        "paper_ssim_rgb": paper[1],
                        "run_dir": row["run_dir"],
                        "logs": row["logs"],
                    }
                )


def write_report(
    plan, results: dict[str, dict], wall_seconds: float, compute_seconds: float
) -> tuple[str, list[Path]]:
    """Write ``<table>.md``, ``.csv``, ``.json`` and ``.png`` into the table folder.

    Returns:
        ``(markdown, paths written)``.
    """
    from moss_tf.paper.figures import plot_table

    data = table_data(plan, results, wall_seconds, compute_seconds)
    folder = plan.table_dir
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / plan.table.name
    markdown = to_markdown(data, folder)
    paths = [stem.with_suffix(s) for s in (".md", ".csv", ".json", ".png")]
    paths[0].write_text(markdown, encoding="utf-8")
    write_csv(data, paths[1])
    paths[2].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    plot_table(data).savefig(paths[3], dpi=120, bbox_inches="tight")
    return markdown, paths
