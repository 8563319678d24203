"""Errors a user can cause or act on: the scripts print them as one line (bn_keras.cli).

Each message names what is wrong and what to do. Each class is also the built-in
exception a caller would expect (a bad setting is a ValueError, a missing file a
FileNotFoundError), so code that catches those keeps working. Anything else raised
inside the package is a bug, and the scripts show its traceback.
"""

from __future__ import annotations

import errno
import os
import re


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


class InUse(UserError, BlockingIOError):
    """Another process is writing to the same directory."""


class WorkerLost(UserError, ConnectionError):
    """Another worker of a multi-worker run has stopped: this one cannot go on alone."""


class DamagedFile(Unusable):
    """A file that exists but cannot be what it should be: cut short, overwritten, altered."""

    def __init__(self, path: str, reason: str, advice: str = ""):
        self.path, self.reason = path, reason
        super().__init__(f"{path} is damaged ({reason})" + (f"; {advice}" if advice else "")
                         + ".")


# What to do about a place that cannot be written, by errno.
_WRITE_ADVICE = {errno.ENOSPC: "free some space on that disk",
                 errno.EDQUOT: "free some space (the disk quota is full)",
                 errno.EROFS: "it is on a read-only filesystem: choose a writable place",
                 errno.EACCES: "choose a place you may write to",
                 errno.EPERM: "choose a place you may write to"}


def write_failure(error: BaseException) -> int | None:
    """The errno of a place that cannot be written (full disk, quota, read-only, no
    permission) behind `error`, however the library reported it: an OSError's errno,
    h5py's "errno = 28" in a message, TensorFlow's OpError text ("No space left on
    device"); None for any other error. The one place that knows these reports."""
    code = getattr(error, "errno", None)
    if isinstance(code, int) and code:
        return code if code in _WRITE_ADVICE else None
    text = str(getattr(error, "message", None) or error)
    match = re.search(r"errno = (\d+)", text)
    if match:
        return int(match.group(1)) if int(match.group(1)) in _WRITE_ADVICE else None
    return next((code for code in _WRITE_ADVICE if os.strerror(code) in text), None)


def cannot_write(path: str, error: BaseException, advice: str = "") -> Unusable:
    """The one-line error for `path` that could not be written (full disk, read-only
    filesystem, no permission), with what to do. `error` is an OSError, or another
    library's error whose message carries the system's reason."""
    text = str(getattr(error, "message", None) or error)
    code = write_failure(error)
    reason = os.strerror(code) if code else (text.strip().splitlines()
                                             or [type(error).__name__])[0]
    advice = _WRITE_ADVICE.get(code, advice or "choose a writable place")
    return Unusable(f"cannot write {path}: {reason}; {advice}.")
