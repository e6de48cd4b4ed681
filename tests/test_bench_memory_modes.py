"""The memory-mode and tiling rows of ``python -m bench`` (no timing is asserted)."""

from __future__ import annotations

from bench import memory_modes
from bench.common import Measurement


def _run(failed_key=None):
    measurements = memory_modes.plan(quick=True)
    for m in measurements:
        key = m.params.get("mode") or m.params["variant"]
        seconds = {"per_image": 2.0, "batch": 2.0, "frozen": 1.5, "whole": 4.0}.get(key, 6.0)
        m.result = {"median_s": seconds, "peak_rss_mb": 1000.0 + seconds, "cores_used": 2.0}
        if m.key == failed_key:
            m.result = {"error": "exit code -9\nKilled"}
    return measurements


def test_the_plan_times_every_mode_and_tiling_at_one_setting():
    plan = memory_modes.plan(quick=False, threads=2)
    modes = [m.params["mode"] for m in plan if m.kind == "memory_mode"]
    assert modes == ["per_image", "batch", "frozen"]
    assert {(m.params["size"], m.params["batch"]) for m in plan if m.kind == "memory_mode"} == {
        (1024, 4)
    }
    assert [m.params["variant"] for m in plan if m.kind == "tiling"] == list(memory_modes.TILINGS)
    assert {m.params["threads"] for m in plan} == {2}


def test_the_tables_give_ratios_to_per_image_and_to_the_whole_photo_and_mark_failures():
    text = memory_modes.report_section(_run(failed_key="tiling/frozen"))
    assert "a batch of 4 images of 512 × 512" in text
    frozen = next(line for line in text.splitlines() if line.startswith("| frozen"))
    assert "1.50" in frozen and "0.75×" in frozen and "1,002" in frozen
    assert "2048 × 1536" in text
    two_pass = next(line for line in text.splitlines() if "two passes" in line)
    assert "1.50×" in two_pass  # 6.0 s against 4.0 s whole
    frozen_tiles = next(line for line in text.splitlines() if "frozen memory" in line)
    assert "failed: exit code -9" in frozen_tiles


def test_nothing_is_printed_when_these_rows_did_not_run():
    other = Measurement("pipeline/demo", "pipeline", {}, "pipeline")
    assert memory_modes.report_section([other]) == ""
