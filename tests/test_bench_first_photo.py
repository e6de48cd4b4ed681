"""``python -m bench.first_photo``: its plan, its rounds and its table on fake timings.

No timing is asserted: the figures belong to the command, not to tests.
"""

from __future__ import annotations

import sys

import pytest
from PIL import Image

from bench import first_photo

TF, COMMAND, CALL = first_photo.NAMES

#: Three rounds; the Python call failed in the second.
ROUNDS = [
    {TF: 4.0, COMMAND: 6.0, CALL: 10.0},
    {TF: 5.0, COMMAND: 7.5, CALL: "exit code 1: boom"},
    {TF: 4.5, COMMAND: 9.9, CALL: 9.0},
]


def _fake_python(tmp_path, with_command=True):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").touch()
    if with_command:
        (bin_dir / first_photo.COMMAND).touch()
    return str(bin_dir / "python")


def test_the_photo_is_a_500_by_333_jpeg(tmp_path):
    with Image.open(first_photo.make_photo(tmp_path)) as photo:
        assert (photo.format, photo.size, photo.mode) == ("JPEG", (500, 333), "RGB")


def test_the_plan_runs_the_installed_command_beside_python_and_the_one_call(tmp_path):
    python = _fake_python(tmp_path)
    photo, out = tmp_path / "p.jpg", tmp_path / "o.png"
    plan = first_photo.commands(photo, out, python)
    assert list(plan) == [TF, COMMAND, CALL]
    assert plan[TF] == [python, "-c", "import tensorflow"]
    command = str(tmp_path / "bin" / "moss-derain")
    assert plan[COMMAND] == [command, str(photo), "--output", str(out)]
    assert plan[CALL][:2] == [python, "-c"]
    assert "Derainer.from_preset('moss_release').derain(" + repr(str(photo)) in plan[CALL][2]


def test_a_missing_command_names_where_it_was_looked_for(tmp_path):
    python = _fake_python(tmp_path, with_command=False)
    with pytest.raises(FileNotFoundError, match=r"bin/moss-derain: no moss-derain beside"):
        first_photo.commands(tmp_path / "p.jpg", tmp_path / "o.png", python)


def test_rounds_alternate_the_three_processes():
    plan = {TF: ["a"], COMMAND: ["b"], CALL: ["c"]}
    ran, lines = [], []
    rounds = first_photo.run_rounds(
        plan, 2, lambda argv: ran.append(argv[0]) or 1.0 * len(ran), lines.append
    )
    assert ran == ["a", "b", "c", "a", "b", "c"]
    assert rounds[1] == {TF: 4.0, COMMAND: 5.0, CALL: 6.0}
    assert lines[0] == "  round 1/2, import tensorflow: 1.00 s"


def test_the_table_gives_per_round_ratios_their_medians_and_the_verdict():
    info = {**first_photo.machine_info(), "load_average_1min": 1.25}
    text = first_photo.report(ROUNDS, info, "python -m bench.first_photo")
    lines = text.splitlines()
    assert lines[0].startswith("Machine: ") and "Command: `python -m bench.first_photo`" in lines[0]
    cells = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in lines if "|" in line}
    assert [c.strip() for c in cells["1"]] == ["4.00", "6.00", "10.00", "1.50×", "2.50×"]
    assert [c.strip() for c in cells["2"]] == ["5.00", "7.50", "failed", "1.50×", "–"]
    # medians: seconds over the rounds that ran; ratios over the rounds' own ratios
    assert [c.strip() for c in cells["median"]] == ["4.50", "7.50", "9.50", "1.50×", "2.25×"]
    assert "- moss-derain: 1.50× `import tensorflow`, within 2×." in lines
    assert "- Derainer: 2.25× `import tensorflow`, NOT within 2×." in lines
    assert lines[-1] == "- Load average at the start: 1.25."


def test_a_failed_process_reports_its_exit_code_and_last_words(tmp_path):
    assert isinstance(first_photo.time_process([sys.executable, "-c", "pass"], tmp_path), float)
    failed = first_photo.time_process([sys.executable, "-c", "raise SystemExit('boom')"], tmp_path)
    assert failed == "exit code 1: boom"


def test_the_command_times_each_entry_point_in_its_temporary_folder(monkeypatch, capsys):
    ran = []

    def fake_time(argv, cwd):
        ran.append((argv, cwd))
        return {0: 4.0, 1: 6.0, 2: 7.0}[len(ran) % 3]

    monkeypatch.setattr(first_photo, "time_process", fake_time)
    assert first_photo.main(["--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert len(ran) == 6 and len({cwd for _, cwd in ran}) == 1
    photo = ran[1][0][1]
    assert photo.endswith("coffee_500x333.jpg") and photo.startswith(str(ran[1][1]))
    assert "Command: `python -m bench.first_photo --rounds 2`" in out
    assert "| median |" in out
