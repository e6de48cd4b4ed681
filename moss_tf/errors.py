"""Errors that carry a sentence for the user instead of a stack trace."""


class MossError(Exception):
    """Base class: the message names the file, key or value at fault."""


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
