"""Errors a user can cause or act on: the scripts print them as one line (bn_keras.cli).

Each message names what is wrong and what to do. Each class is also the built-in
exception a caller would expect (a bad setting is a ValueError, a missing file a
FileNotFoundError), so code that catches those keeps working. Anything else raised
inside the package is a bug, and the scripts show its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake or a condition the user can act on."""


class InvalidSetting(UserError, ValueError):
    """A flag, configuration field or argument out of range, or in conflict with another
    or with what a work directory already holds."""


class NotFound(UserError, FileNotFoundError):
    """A file, directory or dataset the command needs is not where it was asked for."""


class AlreadyExists(UserError, FileExistsError):
    """The target of a write already holds something that must not be replaced silently."""


class Unusable(UserError, OSError):
    """A file that cannot be used as it is (damaged, cut short, not what it claims), or a
    place that cannot be written (full disk, read-only)."""
