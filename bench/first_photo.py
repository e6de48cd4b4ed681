"""The first photo through the entry points, timed beside ``import tensorflow`` (issue 30).

    python -m bench.first_photo              # 3 alternating rounds: about a minute
    python -m bench.first_photo --rounds 5

Each round runs three fresh processes, one after the other, and times each
from its start to its exit (wall seconds):

1. ``python -c "import tensorflow"``: what every entry point pays at least;
2. the installed command, ``moss-derain PHOTO --output OUT.png`` (found
   beside the running Python);
3. the Python call, ``python -c "from moss_tf import Derainer;
   Derainer.from_preset('moss_release').derain(PHOTO)"``.

PHOTO is scikit-image's bundled ``coffee`` photo resized to 500 × 333 and
saved as a JPEG in a temporary folder, where the processes run, so that the
Python call imports the installed moss_tf, as the command does. The ratios
(2)/(1) and (3)/(1) are taken within each round, so a machine that slows
down between rounds moves both sides; the summary row gives the median of
each column. The goal: both ratios within 2×.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import describe_machine, fmt, machine_info, markdown_table

PHOTO_SIZE = (500, 333)  # width, height
COMMAND = "moss-derain"
GOAL = 2.0  # each entry point within this many times `import tensorflow`
TIMEOUT_S = 600
#: The three entry points, in the order each round runs them.
NAMES = ("import tensorflow", COMMAND, "Derainer")
TITLES = {
    "import tensorflow": '`python -c "import tensorflow"`',
    COMMAND: f"`{COMMAND} PHOTO --output OUT.png`",
    "Derainer": "`Derainer.from_preset('moss_release').derain(PHOTO)`",
}


def make_photo(folder: Path) -> Path:
    """scikit-image's ``coffee`` (600 × 400) as a 500 × 333 JPEG in ``folder``."""
    from PIL import Image
    from skimage import data

    path = Path(folder) / "coffee_500x333.jpg"
    Image.fromarray(data.coffee()).resize(PHOTO_SIZE, Image.LANCZOS).save(path, quality=90)
    return path


def installed_command(name: str = COMMAND, python: str = sys.executable) -> Path:
    """The console command ``name`` installed beside ``python``.

    Raises:
        FileNotFoundError: naming where it was looked for and how to install it.
    """
    path = Path(python).parent / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no {name} beside {python} (install moss-tf into that environment: "
            "pip install -e .)"
        )
    return path


def commands(photo: Path, output: Path, python: str = sys.executable) -> dict[str, list[str]]:
    """The command line of each entry point, by name, in the order of :data:`NAMES`."""
    call = (
        f"from moss_tf import Derainer; Derainer.from_preset('moss_release').derain({str(photo)!r})"
    )
    return {
        "import tensorflow": [python, "-c", "import tensorflow"],
        COMMAND: [str(installed_command(COMMAND, python)), str(photo), "--output", str(output)],
        "Derainer": [python, "-c", call],
    }


def time_process(argv: list[str], cwd: Path) -> float | str:
    """Wall seconds of ``argv`` in a fresh process, start to exit; the error, if it failed."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return f"no exit after {TIMEOUT_S} s"
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return f"exit code {done.returncode}: {tail}"
    return seconds


def run_rounds(
    plan: dict[str, list[str]],
    rounds: int,
    run: Callable[[list[str]], float | str],
    progress: Callable[[str], None] = print,
) -> list[dict[str, float | str]]:
    """``rounds`` rounds of every command of ``plan`` in turn: seconds (or an error) by name."""
    found = []
    for number in range(1, rounds + 1):
        this_round = {}
        for name, argv in plan.items():
            this_round[name] = result = run(argv)
            shown = f"{result:.2f} s" if isinstance(result, float) else f"FAILED ({result})"
            progress(f"  round {number}/{rounds}, {name}: {shown}")
        found.append(this_round)
    return found


def _ratio(seconds: dict[str, float | str], name: str) -> float | None:
    mine, floor = seconds.get(name), seconds.get(NAMES[0])
    if isinstance(mine, float) and isinstance(floor, float):
        return mine / floor
    return None


def _median(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def _seconds_cell(value: float | str | None) -> str:
    return fmt(value, 2) if not isinstance(value, str) else "failed"


def _ratio_cell(value: float | None) -> str:
    return f"{value:.2f}×" if value is not None else "–"


HEADER = ["round", *(f"{name} (s)" for name in NAMES)]
HEADER += [f"{name} / import tensorflow" for name in NAMES[1:]]


def rows(rounds: list[dict[str, float | str]]) -> list[list[str]]:
    """One row per round, then the medians (of the seconds, and of the per-round ratios)."""
    found = []
    for number, seconds in enumerate(rounds, 1):
        cells = [str(number), *(_seconds_cell(seconds.get(name)) for name in NAMES)]
        found.append(cells + [_ratio_cell(_ratio(seconds, name)) for name in NAMES[1:]])
    medians = [
        _median([s.get(name) if isinstance(s.get(name), float) else None for s in rounds])
        for name in NAMES
    ]
    ratios = [_median([_ratio(s, name) for s in rounds]) for name in NAMES[1:]]
    found.append(
        ["median", *(_seconds_cell(m) for m in medians), *(_ratio_cell(r) for r in ratios)]
    )
    return found


def verdict(rounds: list[dict[str, float | str]]) -> list[str]:
    """Whether each entry point's median ratio is within :data:`GOAL`."""
    lines = []
    for name in NAMES[1:]:
        ratio = _median([_ratio(s, name) for s in rounds])
        if ratio is None:
            lines.append(f"{name}: no round timed both it and `import tensorflow`.")
        else:
            within = "within" if ratio <= GOAL else "NOT within"
            lines.append(f"{name}: {ratio:.2f}× `import tensorflow`, {within} {GOAL:g}×.")
    return lines


def report(rounds: list[dict[str, float | str]], info: dict, command: str) -> str:
    """The machine, the table and the verdict, as markdown."""
    width, height = PHOTO_SIZE
    parts = [
        f"Machine: {describe_machine(info, None)}. Command: `{command}`.",
        "",
        f"**The first photo** ({width} × {height} JPEG), each entry point in a fresh process, "
        f"{len(rounds)} alternating round(s); wall seconds from start to exit, ratios taken "
        "within each round:",
        "",
        *(f"- {name}: {TITLES[name]}" for name in NAMES),
        "",
        markdown_table(HEADER, rows(rounds)),
        "",
        *(f"- {line}" for line in verdict(rounds)),
    ]
    if info.get("load_average_1min") is not None:  # other programs slow every figure down
        parts.append(f"- Load average at the start: {info['load_average_1min']:.2f}.")
    return "\n".join(parts) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.first_photo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    info = machine_info()
    print(f"moss-tf benchmark (first photo) on {describe_machine(info, None)}")
    with tempfile.TemporaryDirectory(prefix="moss_first_photo_") as folder:
        folder = Path(folder)
        try:
            plan = commands(make_photo(folder), folder / "derained.png")
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        rounds = run_rounds(plan, args.rounds, lambda argv: time_process(argv, folder))
    command = "python -m bench.first_photo" + (f" --rounds {args.rounds}" * (args.rounds != 3))
    print()
    print(report(rounds, info, command), end="")
    return 1 if any(isinstance(v, str) for r in rounds for v in r.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
