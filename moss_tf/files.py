"""File-system checks shared by training and inference: fail before the work, not after."""

from __future__ import annotations

import tempfile
from pathlib import Path

from moss_tf.errors import MossError

__all__ = ["check_writable_folder"]


def check_writable_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Raise MossError, naming ``folder`` (a ``what``), when files cannot be written there.

    ``folder`` may not exist yet: then the nearest folder above it that exists
    must be writable. Writability is tried with a temporary file, removed at
    once (permission bits alone do not tell: root ignores them, and a
    read-only disk or a full quota shows only on writing). Returns the folder tried.
    """
    folder = Path(folder)
    existing = folder.absolute()
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if existing != folder.absolute() and not existing.is_dir():
        raise MossError(f"{folder}: cannot create the {what}, {existing} is a file")
    if not existing.is_dir():
        raise MossError(f"{folder}: is a file, not a folder; choose another {what}")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".moss-write-test-"):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        where = "" if existing == folder.absolute() else f" ({existing})"
        raise MossError(f"{folder}: {what} is not writable{where}: {reason}") from None
    return existing
