"""Errors that a user can fix: a bad config value, bad data, an unusable checkpoint or run
directory. The command line prints them as one line (``jepalab <cmd>: error: ...``, exit
code 2) instead of a traceback; ``--debug`` or ``HYDRA_FULL_ERROR=1`` shows the traceback.

Each class also derives from the built-in exception that Python code would expect
(``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message names the key, file or option to change."""


class ConfigError(UserError, ValueError):
    """A configuration value is missing, out of range or inconsistent (names the key)."""


class ArgumentError(ConfigError, TypeError):
    """Configured arguments that a registered constructor does not take (a typo in
    ``data.params``): names the accepted ones. Also a ``TypeError``, as Python would raise."""


class DataError(UserError, ValueError):
    """The data cannot be used as configured (names the file or folder)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint or run directory cannot be used as asked (names the file)."""


__all__ = ["ArgumentError", "CheckpointError", "ConfigError", "DataError", "UserError"]
