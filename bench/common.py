"""What the benchmark's commands share: a measurement in a worker process, the machine, tables.

The parent side of ``python -m bench`` and of each section's own command
(``python -m bench.memory_modes``, ``python -m bench.convolutions``,
``python -m bench.first_photo``): it imports no TensorFlow. What the worker
processes share is in :mod:`bench.worker_tools`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT_S = 900
#: A paper-setting step (32 × 256²) takes minutes on a CPU; a semi step and its warm-up far more.
PAPER_TIMEOUT_S = 7200
#: Starts the line of a worker's stdout that holds its result as JSON.
RESULT_PREFIX = "BENCH_RESULT "


@dataclass
class Measurement:
    """One worker run: ``python -m bench._worker KIND PARAMS``."""

    key: str  # names the result in --json and in the tables
    kind: str  # a worker of bench._worker: "inference", "training", "memory_mode", ...
    params: dict
    title: str  # what the progress line says
    result: dict = field(default_factory=dict)
    timeout_s: float = WORKER_TIMEOUT_S


def run_worker(measurement: Measurement) -> dict:
    """Run one measurement in a child process; its result, or ``{"error": ...}``."""
    command = [
        sys.executable,
        "-m",
        "bench._worker",
        measurement.kind,
        json.dumps(measurement.params),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=measurement.timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        timeout = measurement.timeout_s
        return {"error": f"no result after {timeout:.0f} s", "wall_s": timeout}
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        # A negative code is the signal that ended it (e.g. -9: killed, often out of memory).
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        return {"error": f"exit code {done.returncode}\n{tail}", "wall_s": wall}
    return {**json.loads(lines[-1][len(RESULT_PREFIX) :]), "wall_s": wall}


# ---------------------------------------------------------------- the machine


def machine_info() -> dict:
    """What the figures depend on: CPU, cores, memory, versions, date, load."""
    cpu = platform.processor() or platform.machine()
    memory_gb = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = int(line.split()[1]) / 2**20  # kB -> GiB
                break
    except OSError:  # not Linux
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gb,
        "python": platform.python_version(),
        "tensorflow": metadata.version("tensorflow"),
        "keras": metadata.version("keras"),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def describe_machine(info: dict, threads: int | None) -> str:
    """One line naming the machine, as the README table cites it."""
    memory = f", {info['memory_gib']:.0f} GiB RAM" if info.get("memory_gib") else ""
    thread_note = (
        f"{threads} thread{'s' if threads > 1 else ''} for TensorFlow (and PyTorch)"
        if threads
        else "TensorFlow's default threads"
    )
    return (
        f"{info['cpu']}, {info['cores']} cores{memory}; {thread_note}; "
        f"TensorFlow {info['tensorflow']}, Keras {info['keras']}, Python {info['python']}; "
        f"{info['date']}"
    )


# ---------------------------------------------------------------- tables


def markdown_table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """A GitHub markdown table, columns padded to line up in a terminal too.

    Args:
        header: the column titles.
        rows: the cells, as strings; each row as long as ``header``.
        align: one letter per column, ``l`` (text) or ``r`` (numbers).
            Default: the first column left, the others right.
    """
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align={align!r} needs one 'l' or 'r' per column ({len(header)})")
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {row} has {len(row)} cells, the header {len(header)}")
    columns = zip(header, *rows, strict=True)
    widths = [max(3, *(len(cell) for cell in column)) for column in columns]  # "---" at least

    def line(cells):
        padded = [
            cell.ljust(width) if side == "l" else cell.rjust(width)
            for cell, width, side in zip(cells, widths, align, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        ":" + "-" * (width + 1) if side == "l" else "-" * (width + 1) + ":"
        for width, side in zip(widths, align, strict=True)
    ]
    return "\n".join([line(header), "|" + "|".join(rule) + "|", *(line(row) for row in rows)])


def counted_gflop(counts: dict) -> float:
    """GFLOP of a count by op type (:func:`bench.flops.function_flops`), as
    :func:`bench.flops.total_gflop` gives it, without importing TensorFlow."""
    return sum(counts.values()) / 1e9


def fmt(value, digits: int | None = None) -> str:
    """A figure for a table: ``digits`` decimals, or three significant digits by default.

    Large values keep all their integer digits with thousands separators
    (``8,009``); a missing value is an en dash.
    """
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if digits is None:
        magnitude = abs(value)
        digits = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
        if 0 < magnitude < 0.01:
            return f"{value:.2g}"
    return f"{value:,.{digits}f}"


def failure_cell(result: dict) -> str:
    """A table cell for a measurement without figures: why it failed, or that it did not run."""
    if "error" in result:
        return "failed: " + result["error"].splitlines()[0]
    return "not run"


# ---------------------------------------------------------------- running measurements


def progress(measurement: Measurement, describe: Callable[[Measurement], str]) -> str:
    """The end of a measurement's progress line: its failure or skip, else ``describe(it)``."""
    r = measurement.result
    if "error" in r:
        return f"FAILED ({r['error']})"
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    return describe(measurement)


def run_measurements(
    measurements: list[Measurement], describe: Callable[[Measurement], str]
) -> None:
    """Run each measurement's worker in turn (its ``result`` filled in), a progress line each;
    ``describe(measurement)`` tells a successful one's figures."""
    for i, m in enumerate(measurements, 1):
        print(f"[{i}/{len(measurements)}] {m.title} ...", end=" ", flush=True)
        m.result = run_worker(m)
        print(f"{progress(m, describe)}  [{m.result['wall_s']:.0f} s]", flush=True)


def section_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The command-line parser of a section's own command, with its ``--threads``."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, help="TensorFlow CPU threads (default: all)")
    return parser


def run_section(
    name: str,
    measurements: list[Measurement],
    report_section: Callable[[list[Measurement]], str],
    describe: Callable[[Measurement], str],
    args,
    command: str,
) -> int:
    """A section's own command (``python -m bench.memory_modes``, ...): machine, progress, table.

    ``report_section(measurements)`` gives the section's markdown,
    ``describe(measurement)`` a progress line's figures; ``command`` is the
    command line it names. Returns 1 if a measurement failed, else 0.
    """
    info = machine_info()
    print(f"moss-tf benchmark ({name}) on {describe_machine(info, args.threads)}")
    run_measurements(measurements, describe)
    print(f"\nMachine: {describe_machine(info, args.threads)}. Command: `{command}`.\n")
    print(report_section(measurements), end="")
    return 1 if any("error" in m.result for m in measurements) else 0
