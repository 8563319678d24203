"""Files written whole or not at all: a temporary file beside the target, then a rename.

A run killed mid-write (Ctrl-C, SIGKILL, a full disk) leaves the previous
version of the file, never half of a new one. A write that fails (a full disk,
a read-only place) removes its temporary file and raises `Unusable` naming the
file; a file that cannot be read back as what it should be raises `DamagedFile`.
A temporary file is named `.<stem>.<pid>.tmp<suffixes>` (`.best.812.tmp.keras`: Keras
reads the kind of a file from its suffix); `is_temporary` recognizes the ones a
killed process left behind.

Durable, too: a file (or directory, `publish_directory`) is fsynced before the rename
that publishes it, and its directory after, so a power loss leaves the old version or
the new one, and a caller may delete what the new version replaces once it returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

from bn_keras.errors import DamagedFile, Unusable, cannot_write

_TEMPORARY = re.compile(r"^\.[^.]+\.\d+\.tmp(\..+)?$")


def temporary_path(path: str) -> str:
    """The temporary name a write of `path` goes through, beside it."""
    directory, name = os.path.split(os.path.abspath(path))
    stem, dot, suffixes = name.partition(".")
    return os.path.join(directory, f".{stem}.{os.getpid()}.tmp{dot}{suffixes}")


def is_temporary(name: str) -> bool:
    return bool(_TEMPORARY.match(name))


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
    """Yields a temporary path to write `path`'s new content to; on success renames it
    into place, on failure removes it. An OSError (full disk, read-only place) becomes
    `Unusable`, naming `path`."""
    tmp = temporary_path(path)
    try:
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        yield tmp
        fsync(tmp)
        os.replace(tmp, path)
        fsync(os.path.dirname(tmp))
    except Unusable:
        raise
    except OSError as e:
        raise cannot_write(path, e) from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def write_text(path: str, text: str) -> str:
    """Writes `text` to `path` atomically; returns `path`."""
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def write_bytes(path: str, data: bytes) -> str:
    """Writes `data` to `path` atomically; returns `path`."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


def write_json(path: str, value: Any, indent: int | None = 2) -> str:
    """Writes `value` as JSON (keys sorted, non-JSON values as strings) atomically."""
    return write_text(path, json.dumps(value, indent=indent, sort_keys=True, default=str) + "\n")


def read_json(path: str, default: Any = None, kind: type | None = None) -> Any:
    """The JSON value in `path`, or `default` when the file does not exist. Raises
    DamagedFile when it is not JSON (cut short, overwritten), or not of `kind`."""
    if not os.path.exists(path):
        return default
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DamagedFile(path, f"not valid JSON ({e})") from None
    except OSError as e:
        raise DamagedFile(path, os.strerror(e.errno) if e.errno else str(e)) from None
    if kind is not None and not isinstance(value, kind):
        raise DamagedFile(path, f"it holds a JSON {type(value).__name__}, not a "
                                f"{'object' if kind is dict else kind.__name__}")
    return value


def fsync(path: str) -> None:
    """Flushes the file or directory `path` to the disk (a directory: its entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str) -> None:
    """fsync of every file and directory under `path`, `path` included."""
    for directory, _, files in os.walk(path):
        for name in files:
            fsync(os.path.join(directory, name))
        fsync(directory)


def publish_directory(tmp: str, target: str) -> None:
    """Makes the finished directory `tmp` the directory `target` in one step, durably.

    Everything in `tmp` is fsynced first. Where `target` exists, the two are exchanged
    atomically (Linux's renameat2 RENAME_EXCHANGE): `target` is never missing, and the
    old version, now at `tmp`, is removed after; a stop at any moment leaves the old
    version or the new one at `target` (and, at worst, the old one at `tmp`). Elsewhere,
    or on a filesystem without the exchange, the old version is moved aside first.
    """
    fsync_tree(tmp)
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.lexists(target):
        os.rename(tmp, target)
    elif not _exchange(tmp, target):
        aside = f"{tmp}.old"
        os.rename(target, aside)
        os.rename(tmp, target)
        os.rename(aside, tmp)
    fsync(parent)
    shutil.rmtree(tmp, ignore_errors=True)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: str, b: str) -> bool:
    """Swaps the paths `a` and `b` atomically; False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # no exchange here
        return False
    raise OSError(code, os.strerror(code), b)


def sha256(path: str) -> str:
    """The file's SHA-256, hex: recorded when a file is committed, checked before it is
    trusted again."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
