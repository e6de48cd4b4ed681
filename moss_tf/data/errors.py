"""Errors of the data pipeline; each message names the file, folder or key at fault."""

from __future__ import annotations

from moss_tf.errors import MossError


class DataError(MossError, ValueError):
    """A dataset folder or file list cannot be used (missing, empty, unknown layout)."""


class ImageError(DataError):
    """One image file cannot be used: unreadable, truncated, empty, too large or too small."""
