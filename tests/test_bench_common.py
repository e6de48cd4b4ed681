"""The benchmark's shared runner: a section's own command and ``python -m bench`` report each
measurement's progress and table through :mod:`bench.common` (workers faked, nothing timed)."""

from __future__ import annotations

import pytest

from bench import __main__ as bench_main
from bench import common, memory_modes


@pytest.fixture
def fake_workers(monkeypatch):
    """Every worker "runs" at once: 1.5 s, 2 cores, 900 MB; ``tiling/frozen`` is killed."""
    ran = []

    def run_worker(measurement):
        ran.append(measurement.key)
        if measurement.key == "tiling/frozen":
            return {"error": "exit code -9\nKilled", "wall_s": 3.0}
        return {"median_s": 1.5, "cores_used": 2.0, "peak_rss_mb": 900.0, "wall_s": 2.0}

    monkeypatch.setattr(common, "run_worker", run_worker)
    return ran


def test_a_section_command_prints_machine_progress_and_table_and_fails_on_a_failure(
    fake_workers, capsys
):
    assert memory_modes.main(["--quick", "--threads", "2"]) == 1
    out = capsys.readouterr().out
    planned = [m.key for m in memory_modes.plan(quick=True)]
    assert fake_workers == planned
    assert out.startswith("moss-tf benchmark (memory modes, tiling) on ")
    assert "2 threads for TensorFlow" in out
    assert f"[1/{len(planned)}] memory at inference, per_image" in out
    assert "1.500 s (2.0 cores), peak 900 MB  [2 s]" in out
    assert "FAILED (exit code -9\nKilled)  [3 s]" in out
    assert "Command: `python -m bench.memory_modes --quick`." in out
    frozen_tiles = next(line for line in out.splitlines() if "frozen memory" in line)
    assert "failed: exit code -9" in frozen_tiles


def test_the_whole_bench_describes_each_section_through_the_shared_runner(fake_workers, capsys):
    assert bench_main.main(["--quick", "--only", "memory"]) == 1
    out = capsys.readouterr().out
    assert fake_workers == [m.key for m in memory_modes.plan(quick=True)]
    assert "1.500 s (2.0 cores), peak 900 MB" in out
    assert "Command: `python -m bench --quick --only memory`." in out
    assert "**Memory at inference**" in out


def test_progress_names_a_failure_or_a_skip_before_describing_figures():
    m = common.Measurement("k", "inference", {}, "title")
    m.result = {"skipped": "no data at /x"}
    assert common.progress(m, describe=lambda _: "figures") == "skipped: no data at /x"
    m.result = {"error": "exit code 1\nboom"}
    assert common.progress(m, describe=lambda _: "figures") == "FAILED (exit code 1\nboom)"
    m.result = {"median_s": 1.0}
    assert common.progress(m, describe=lambda m: f"{m.result['median_s']} s") == "1.0 s"
