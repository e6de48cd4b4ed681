"""File-system checks shared by training, inference and the commands: fail before the work.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from moss_tf.data.images import IMAGE_EXTENSIONS
from moss_tf.errors import MossError

__all__ = ["check_output_folder", "check_writable_folder", "writes_one_file"]


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


def writes_one_file(input_path: str | Path, output: str | Path) -> bool:
    """Whether ``output`` is the result file itself: one photo in, an image file name out
    (``derained.png``) that is not an existing folder."""
    input_path, output = Path(input_path), Path(output)
    return (
        not input_path.is_dir()
        and output.suffix.lower() in IMAGE_EXTENSIONS
        and not output.is_dir()
    )


def check_output_folder(output_dir: str | Path, input_path: str | Path | None = None) -> None:
    """Raise MossError, naming ``output_dir``, when derained photos cannot be written there.

    It must be a folder or creatable as one, writable, and not the input
    folder (the results would overwrite the photos); or, for one photo, a file
    name in a writable folder (:func:`writes_one_file`). Reads no image.
    """
    output_dir = Path(output_dir)
    if input_path is not None and writes_one_file(input_path, output_dir):
        check_writable_folder(output_dir.parent, "output file's folder")
        return
    check_writable_folder(output_dir, "output folder")
    same = input_path is not None and output_dir.resolve() == Path(input_path).resolve()
    if same and Path(input_path).is_dir():
        raise MossError(
            f"{output_dir}: is the input folder; the results would overwrite the photos "
            "(choose another output folder)"
        )
