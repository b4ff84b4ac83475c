"""Errors that the CLI turns into one-line messages (exit status 2)."""


class SnngenError(Exception):
    """A user-facing error: the message names the bad input and what would be right."""


class ConfigError(SnngenError, ValueError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class ArgumentError(SnngenError, TypeError):
    """A Python API function was called with an argument it does not take (an unknown keyword,
    a value of the wrong kind); the message names the argument as the caller wrote it."""
