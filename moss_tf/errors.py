"""Errors that carry a sentence for the user instead of a stack trace."""

#: Longer messages are cut in the middle (a value quoted in full could run to megabytes).
MAX_MESSAGE_CHARS = 2000
_KEPT_TAIL = 300


def cut(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` if at most ``limit`` characters, else its start and end around a marker."""
    if len(text) <= limit:
        return text
    head = limit - _KEPT_TAIL - 40
    gap = len(text) - head - _KEPT_TAIL
    return f"{text[:head]} [... {gap:,} characters cut ...] {text[-_KEPT_TAIL:]}"


class MossError(Exception):
    """Base class: the message names the file, key or value at fault.

    Messages longer than :data:`MAX_MESSAGE_CHARS` are cut to that length.
    """

    def __str__(self) -> str:
        return cut(super().__str__())


class ConfigError(MossError, ValueError):
    """A configuration file, key or value is wrong."""


class CheckpointError(MossError):
    """A checkpoint is missing, damaged, or belongs to another configuration."""


class TrainingError(MossError):
    """Training cannot start or go on; the message says why and what was kept."""


class DataError(MossError, ValueError):
    """A dataset folder or file list cannot be used (missing, empty, unknown layout)."""


class ImageError(DataError):
    """One image file cannot be used: unreadable, truncated, empty, too large or too small."""
