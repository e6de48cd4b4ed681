"""Hostile and careless input (issue 31): every case gets a clear message, nothing else is lost.

Each case is generated here: YAML bombs, tiny, huge-aspect and NaN images,
decompression-bomb headers, truncated and empty files, damaged checkpoints,
a full disk, unusable output folders and two runs on one run directory. For
each the test asserts a clear error (naming the file, one line, no
traceback) or a correct result, that the process carries on, and that
nothing already written is lost.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import REPO, TINY_MODEL
from PIL import Image
from test_training import FAST

from moss_tf.commands import evaluate as evaluate_cli
from moss_tf.commands import train as train_cli
from moss_tf.config import MAX_DEPTH, ConfigError, config_from_dict, load_config, save_config
from moss_tf.data import ImageError, read_image
from moss_tf.data.images import MAX_PIXELS, pixel_limit
from moss_tf.errors import MAX_MESSAGE_CHARS
from moss_tf.nn.network import MOSSNet
from moss_tf.train import checkpoints as ckpt
from moss_tf.train import run_lock

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


# ------------------------------------------------------------------ generated inputs


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG file that declares ``width x height`` pixels (its data is one empty row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + chunk(b"IEND", b"")
    )


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


YAML_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory holding a tiny trained-looking network."""
    keras.utils.set_random_seed(3)
    net = MOSSNet(**TINY_MODEL)
    net.build()
    folder = tmp_path_factory.mktemp("runs") / "tiny"
    folder.mkdir()
    save_config(config_from_dict({"name": "tiny", "model": TINY_MODEL}), folder / "config.yaml")
    net.save_weights(folder / "model.weights.h5")
    return folder


def derain(run_dir: Path, photos: Path, out: Path, *extra: str) -> int:
    argv = ["--run-dir", str(run_dir), "--input", str(photos), "--output", str(out), "--quiet"]
    return evaluate_cli.main([*argv, *extra])


def one_error_line(stderr: str) -> str:
    """The single ``error: ...`` line a command printed (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# ------------------------------------------------------------------ images


def test_a_folder_of_bad_photos_skips_each_by_name_and_writes_the_rest(run_dir, tmp_path, capsys):
    photos, out = tmp_path / "photos", tmp_path / "derained"
    photos.mkdir()
    out.mkdir()
    (out / "earlier.png").write_bytes(b"a result of an earlier run")
    good = {
        "a.png": photo(30, 40),
        "b.jpg": photo(24, 24, seed=1),
        "wide.png": photo(8, 700, seed=2),  # huge aspect, tiled along its width
    }
    for name, array in good.items():
        (photos / name).write_bytes(encoded(array, "PNG" if name.endswith("png") else "JPEG"))
    nan = np.full((16, 20), np.nan, np.float32)
    nan[:, 10:] = 0.5
    Image.fromarray(nan, mode="F").save(photos / "nan.tif")
    bad = {
        "tiny.png": encoded(photo(1, 1), "PNG"),
        "strip.png": encoded(photo(3, 900), "PNG"),  # huge aspect, too thin
        "cut.jpg": encoded(photo(32, 32), "JPEG")[:300],
        "empty.png": b"",
        "bomb.png": png_header(13300, 13300),
    }
    for name, data in bad.items():
        (photos / name).write_bytes(data)

    assert derain(run_dir, photos, out) == 1  # some were skipped
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "4 derained image(s)" in captured.out
    written = {p.name for p in out.iterdir()}
    assert written == {"earlier.png", "a.png", "b.jpg", "wide.png", "nan.tif"}
    assert (out / "earlier.png").read_bytes() == b"a result of an earlier run"
    for name, array in good.items():
        assert read_image(out / name).shape == array.shape
    derained_nan = read_image(out / "nan.tif")
    assert derained_nan.shape == (16, 20, 3)
    skipped = {
        line.split(": ")[0].removeprefix("skipped "): line for line in captured.err.splitlines()
    }
    assert set(skipped) == {str(photos / name) for name in bad}
    side = 2 ** TINY_MODEL["num_resampling_stages"]  # the network's size multiple
    tiny = f"1x1 pixels is too small to derain (at least {side}x{side} needed)"
    assert tiny in skipped[str(photos / "tiny.png")]
    assert "900x3 pixels is too small" in skipped[str(photos / "strip.png")]
    assert "Truncated" in skipped[str(photos / "cut.jpg")]
    assert "empty file" in skipped[str(photos / "empty.png")]
    assert f"more than the limit of {MAX_PIXELS:,}" in skipped[str(photos / "bomb.png")]


def test_a_decompression_bomb_is_refused_from_its_header_at_the_one_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(13300, 13300))  # 21 kB in the issue; under Pillow's own limit
    assert bomb.stat().st_size < 200
    started = time.perf_counter()
    with pytest.raises(ImageError, match=rf"13300x13300 .* more than the limit of {MAX_PIXELS:,}"):
        read_image(bomb)
    assert time.perf_counter() - started < 1.0  # nothing decoded
    # Over Pillow's own limit too, and with the limit set above Pillow's: still our number.
    bomb.write_bytes(png_header(20000, 20000))
    for limit in (MAX_PIXELS, 300_000_000):
        with pixel_limit(limit), pytest.raises(ImageError, match=f"limit of {limit:,}"):
            read_image(bomb)
    small = tmp_path / "small.png"
    small.write_bytes(encoded(photo(30, 40), "PNG"))
    with pixel_limit(1000), pytest.raises(ImageError, match=r"40x30 is 1,200 pixels.* 1,000"):
        read_image(small)
    assert read_image(small).shape == (30, 40, 3)  # the limit is restored after the block


def test_max_pixels_is_an_option_of_evaluate_and_a_data_key(run_dir, tmp_path, capsys):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    (photos / "a.png").write_bytes(encoded(photo(30, 40), "PNG"))
    (photos / "b.png").write_bytes(encoded(photo(20, 20), "PNG"))
    assert derain(run_dir, photos, out, "--max-pixels", "1000") == 1
    err = capsys.readouterr().err
    assert "a.png: 40x30 is 1,200 pixels, more than the limit of 1,000" in err
    assert [p.name for p in out.iterdir()] == ["b.png"]
    cfg = load_config("demo", ["data.max_pixels=5000"])
    assert cfg.data.max_pixels == 5000
    with pytest.raises(ConfigError, match=r"data\.max_pixels"):
        load_config("demo", ["data.max_pixels=0"])


def test_a_full_disk_while_writing_results_stops_with_one_line_and_keeps_the_rest(
    run_dir, tmp_path, capsys, monkeypatch
):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (photos / name).write_bytes(encoded(photo(16, 16), "PNG"))
    save = Image.Image.save

    def save_until_full(self, target, *args, **kwargs):
        if "b.png" in str(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, target, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_until_full)
    assert derain(run_dir, photos, out) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "b.png: cannot write (No space left on device)" in line
    assert "the 1 result(s) written before it are kept" in line
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # no half-written b.png


# ------------------------------------------------------------------ output folders


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in (root ignores permission bits: /sys is refused)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys")
    try:
        (folder / ".moss-probe").touch()
    except OSError:
        return folder
    (folder / ".moss-probe").unlink()
    pytest.skip("no folder here refuses root's writes")


@pytest.mark.parametrize("case", ["a file", "read-only", "the input folder"])
def test_an_unusable_output_folder_is_named_before_the_network_loads(
    run_dir, tmp_path, capsys, monkeypatch, case
):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(encoded(photo(16, 16), "PNG"))
    out = {
        "a file": tmp_path / "results.png",
        "read-only": unwritable_folder(tmp_path) / "derained",
        "the input folder": photos,
    }[case]
    if case == "a file":
        out.write_bytes(b"precious")

    def no_inference(*args):
        raise AssertionError("the network was loaded before the output folder was checked")

    monkeypatch.setattr(evaluate_cli, "load_trained_network", no_inference)
    assert derain(run_dir, photos, out) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line
    expected = {"a file": "is a file", "read-only": "not writable", "the input folder": "input"}
    assert expected[case] in line
    if case == "a file":
        assert out.read_bytes() == b"precious"


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    "text, expected",
    [
        (YAML_BOMB, r"bomb\.yaml, line 1: YAML anchors and aliases"),
        ("train:\n  devices: &x [a]\n  steps: *x\n", r"bomb\.yaml, line 2: YAML anchors"),
        ("base: x.yaml\n<<: &m {a: 1}\n", r"line 2: YAML anchors"),
        ("name: " + "[" * 60 + "]" * 60 + "\n", rf"line 1: nested deeper than {MAX_DEPTH}"),
        (f"name: {'x' * 10_000}\n", "line 1: a value of 10,000 characters"),
        ("train:\n  learning_rate: .nan\n", "train.learning_rate: expected a finite number"),
        ("train:\n  steps: [1, 2\n", r"line 3: not valid YAML"),
        ("train:\n  devices: [" + ", ".join(["[0]"] * 100_000) + "]\n", "larger than 256 KiB"),
    ],
    ids=["alias-bomb", "alias", "merge-key", "deep", "long-value", "nan", "truncated", "huge"],
)
def test_a_hostile_config_is_refused_at_once_in_one_short_line(tmp_path, capsys, text, expected):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    started = time.perf_counter()
    code = train_cli.main(["--stage", "pretrain", "--config", str(path), "--run-dir", "r"])
    assert time.perf_counter() - started < 2.0
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(path) in line
    assert re.search(expected, line), line
    assert len(line) < 300


def test_values_quoted_in_messages_are_shortened():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"name": ["x" * 1000] * 100_000})
    assert "name: expected a string" in str(err.value) and len(str(err.value)) < 300
    with pytest.raises(ConfigError, match=r"--set .*: value, line 1: YAML anchors"):
        config_from_dict({}, ["train.devices=[&a x, *a]"])
    assert len(str(ConfigError("y" * 10**6))) <= MAX_MESSAGE_CHARS


# ------------------------------------------------------------------ checkpoints


def fake_stage(tmp_path: Path) -> tuple[Path, Path]:
    """A run directory whose stage pretrain has a good best.npz; returns (run, last.npz)."""
    run = tmp_path / "run"
    checkpoints = run / "pretrain" / "checkpoints"
    checkpoints.mkdir(parents=True)
    ckpt.save_state(checkpoints / "best.npz", [keras.Variable(np.ones(3))], 2, {"stage": "x"})
    return run, checkpoints / "last.npz"


@pytest.mark.parametrize(
    "damage, expected",
    [
        (b"", "empty checkpoint (0 bytes)"),
        (b"PK\x03\x04 truncated zip", "not a readable moss-tf checkpoint"),
        (os.urandom(5000), "not a readable moss-tf checkpoint"),
    ],
    ids=["empty", "truncated", "noise"],
)
def test_resuming_from_a_damaged_checkpoint_is_one_line_naming_it(
    tmp_path, capsys, damage, expected
):
    run, last = fake_stage(tmp_path)
    last.write_bytes(damage)
    best = (last.parent / "best.npz").read_bytes()
    argv = ["--stage", "pretrain", "--run-dir", str(run), "--resume"]
    assert train_cli.main([*argv, *(a for o in FAST for a in ("--set", o))]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{last}: {expected}" in line
    assert "copy" in line and "best.npz" in line  # what to do about it
    assert last.read_bytes() == damage and (last.parent / "best.npz").read_bytes() == best
    assert not (run / run_lock.LOCK_FILE).exists()


def test_a_full_disk_at_a_checkpoint_stops_in_one_line_keeping_the_last_good_one(
    tmp_path, capsys, monkeypatch
):
    run = tmp_path / "run"
    savez, calls = np.savez, []

    def savez_until_full(handle, **arrays):
        if "last.npz" in handle.name:
            calls.append(handle.name)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return savez(handle, **arrays)

    monkeypatch.setattr(ckpt.np, "savez", savez_until_full)
    settings = [*FAST, "train.steps=4", "train.validate_every=100", "train.image_every=0"]
    argv = ["--stage", "pretrain", "--run-dir", str(run)]
    assert train_cli.main([*argv, *(a for o in settings for a in ("--set", o))]) == 1
    line = one_error_line(capsys.readouterr().err)
    last = run / "pretrain" / "checkpoints" / "last.npz"
    assert f"{last}: cannot write (No space left on device)" in line
    assert "previous one is kept unchanged; training stopped at step 4" in line
    assert ckpt.read_meta(last)["step"] == 2  # the previous good checkpoint
    umask = os.umask(0o022)
    os.umask(umask)
    assert last.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain write would leave it
    assert not [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    assert not (run / run_lock.LOCK_FILE).exists()  # released on the way out


# ------------------------------------------------------------------ one run per run directory


def train_process(run: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "train.py"), "--stage", "pretrain", "--run-dir", str(run)]
    for override in [*FAST, "train.steps=100000", *extra]:
        command += ["--set", override]
    return subprocess.Popen(
        command, env=ENV, cwd=run.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_holder(run: Path, pid: int, process: subprocess.Popen) -> dict:
    lock = run / run_lock.LOCK_FILE
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if lock.is_file() and lock.read_text():
            record = json.loads(lock.read_text())
            assert record["pid"] == pid
            return record
        time.sleep(0.05)
    raise AssertionError("the first run did not take the run directory in 60 s")


def test_a_second_run_on_a_busy_run_dir_is_refused_naming_the_first_and_a_killed_run_frees_it(
    tmp_path,
):
    run = tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    (run / "pretrain" / "notes.txt").write_text("an earlier stage folder")
    first = train_process(run)
    try:
        holder = wait_for_holder(run, first.pid, first)
        before = sorted(str(p) for p in run.rglob("*"))
        second = train_process(run)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2
        line = one_error_line(err)
        assert f"{run} is in use by another training run: pid {first.pid} on host" in line
        assert holder["started"] in line and "train.py --stage pretrain" in line
        assert first.poll() is None  # the first goes on, its folder untouched
        assert sorted(str(p) for p in run.rglob("*")) == before
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
        first.communicate()
    assert (run / run_lock.LOCK_FILE).is_file()  # left by the killed run
    notes = []
    with run_lock.hold_run_dir(run, notes.append) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and f"pid {first.pid}" in notes[0] and "taking it over" in notes[0]
    assert not (run / run_lock.LOCK_FILE).exists()  # released by removing it


def test_the_lock_is_reentrant_and_each_cluster_worker_holds_its_own(tmp_path, monkeypatch):
    with run_lock.hold_run_dir(tmp_path, print) as outer:
        with run_lock.hold_run_dir(tmp_path, print) as inner:
            assert inner == outer
        assert outer.is_file()
    assert not outer.exists()
    cluster = {"worker": ["a:1", "b:2"]}
    for task, folder in [
        ({"type": "worker", "index": 0}, tmp_path),
        ({"type": "worker", "index": 1}, tmp_path / "workers" / "worker-1"),
    ]:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert run_lock.lock_folder(tmp_path) == folder


def test_without_flock_a_live_holder_still_refuses_and_a_dead_one_is_taken_over(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(run_lock, "fcntl", None)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / run_lock.LOCK_FILE
    try:
        for pid in (alive.pid, dead.pid):
            holder = run_lock.Holder(pid, run_lock.socket.gethostname(), "then", "python train.py")
            lock.write_text(json.dumps(holder.__dict__))
            notes = []
            if pid == alive.pid:
                busy = pytest.raises(run_lock.RunDirBusy, match=f"pid {pid} on host")
                with busy, run_lock.hold_run_dir(tmp_path, notes.append):
                    pass
            else:
                with run_lock.hold_run_dir(tmp_path, notes.append):
                    assert f"pid {pid}" in notes[0]
    finally:
        alive.kill()
        alive.wait()
