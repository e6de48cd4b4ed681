"""Errors that carry a sentence for the user instead of a stack trace."""


class MossError(Exception):
    """Base class: the message names the file, key or value at fault."""


class ConfigError(MossError, ValueError):
    """A configuration file, key or value is wrong."""
