"""One training run at a time in a run directory.

A run holds ``<run_dir>/train.lock`` while it trains (``train.py`` takes it
before TensorFlow starts, :func:`moss_tf.train.stage.run_stage` too). A second
run on the same directory is refused at once, with who holds it::

    error: runs/demo is in use by another training run: pid 4242 on host lab-3, started
    2025-06-01 12:00:03 UTC (train.py --stage pretrain); wait for it to end, stop it
    (kill 4242), or use another --run-dir

How: an exclusive ``fcntl.flock`` on the file, which the kernel releases when
the holding process ends, however it ends (``kill -9`` included): a dead run
never keeps the directory. The file also records the holder (pid, host,
start time, command) for that message. A clean end removes the file; a
record found on taking the lock was left by a run that died (its pid no
longer runs on this host), and the new run says it took over from it.

Where the file system offers no ``flock`` (some network and FUSE mounts),
the record alone decides: a record naming a live process on this host, or
any process on another host, holds the directory; delete the file by hand
when that other host's run has ended.

The workers of a ``TF_CONFIG`` cluster share a run directory: the chief holds
``<run_dir>/train.lock``, every other worker ``<run_dir>/workers/<type>-<index>/train.lock``,
the folder it writes in.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from moss_tf.errors import TrainingError

try:
    import fcntl
except ImportError:  # not POSIX: the record alone decides
    fcntl = None

__all__ = ["LOCK_FILE", "Holder", "RunDirBusy", "hold_run_dir", "lock_folder"]

LOCK_FILE = "train.lock"
_RECORD_WAIT = 2.0  # seconds to wait for a new holder's record to appear
_held: dict[Path, int] = {}  # lock file -> nesting depth, in this process


class RunDirBusy(TrainingError):
    """Another live run holds the run directory; the message names it."""


@dataclass(frozen=True)
class Holder:
    """Who holds a run directory."""

    pid: int
    host: str
    started: str
    command: str

    @classmethod
    def this_process(cls) -> Holder:
        command = " ".join(["python", Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [])
        if len(command) > 80:
            command = command[:76].rstrip() + " ..."
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        return cls(os.getpid(), socket.gethostname(), started, command)

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started} ({self.command})"

    def alive(self) -> bool:
        """Whether the holder still runs (assumed, when it is on another host)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True


def lock_folder(run_dir: str | Path) -> Path:
    """The folder whose ``train.lock`` this process takes: the run directory, or its
    worker folder for a worker of a ``TF_CONFIG`` cluster other than the chief."""
    run_dir = Path(run_dir)
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task, cluster = config.get("task") or {}, config.get("cluster") or {}
        kind, index = task.get("type"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError):
        return run_dir  # TensorFlow reports a broken TF_CONFIG itself
    if not kind or kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster):
        return run_dir
    return run_dir / "workers" / f"{kind}-{index}"


@contextlib.contextmanager
def hold_run_dir(run_dir: str | Path, say: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold ``run_dir`` (see the module docstring) for the block; yields the lock file.

    Re-entrant within a process (``train.py`` holds it, then ``run_stage``).
    ``say`` receives the note when a dead run's lock is taken over.

    Raises:
        RunDirBusy: another live run holds it, naming that run.
        TrainingError: the lock file cannot be created.
    """
    folder = lock_folder(run_dir)
    path = (folder / LOCK_FILE).absolute()
    if path in _held:
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    handle = _acquire(path, Path(run_dir), say)
    _held[path] = 1
    try:
        yield path
    finally:
        del _held[path]
        _release(path, handle)


def _acquire(path: Path, run_dir: Path, say) -> int:
    """Take the lock at ``path``; returns the open file descriptor that holds it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrainingError(
            f"{path.parent}: run directory is not writable ({err.strerror or err})"
        ) from None
    while True:
        fd = _open(path)
        state = _flock(fd)
        if state == "busy":
            holder = _wait_for_record(fd)
            os.close(fd)
            raise _busy(run_dir, path, holder)
        if _same_file(fd, path):
            break
        os.close(fd)  # a run released (removed) the file meanwhile: take the new one
    previous = _read_record(fd)
    if previous is not None and previous.pid != os.getpid():
        if state == "unsupported" and previous.alive():
            os.close(fd)
            raise _busy(run_dir, path, previous)
        say(
            f"note: {run_dir} was held by a run that ended without releasing it "
            f"({previous.describe()}); taking it over"
        )
    _write_record(fd, Holder.this_process())
    return fd


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise TrainingError(f"{path}: cannot create the run's lock file ({err.strerror})") from None


def _flock(fd: int) -> str:
    """Try the exclusive lock without waiting: ``locked``, ``busy`` or ``unsupported``."""
    if fcntl is None:
        return "unsupported"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "busy"
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return "unsupported"  # the record alone decides (module docstring)
        raise
    return "locked"


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not one removed by a releasing run)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_record(fd: int) -> Holder | None:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
        return Holder(**json.loads(text))
    except (OSError, ValueError, TypeError):
        return None


def _wait_for_record(fd: int) -> Holder | None:
    """The holder's record; a holder that has just taken the lock writes it at once."""
    deadline = time.monotonic() + _RECORD_WAIT
    while (holder := _read_record(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return holder


def _write_record(fd: int, holder: Holder) -> None:
    data = json.dumps(asdict(holder)).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _busy(run_dir: Path, path: Path, holder: Holder | None) -> RunDirBusy:
    who = holder.describe() if holder else "a process whose record is unreadable"
    stop = f", stop it (kill {holder.pid})" if holder else ""
    return RunDirBusy(
        f"{run_dir} is in use by another training run: {who}; wait for it to end{stop}, "
        f"or use another --run-dir (lock file {path})"
    )


def _release(path: Path, fd: int) -> None:
    """Remove the lock file, then let go of the lock (in this order: see _acquire)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # cannot remove it: an empty record names no holder
    finally:
        os.close(fd)
