"""One writer per directory: an OS lock that dies with the process holding it.

`DirectoryLock(path)` takes an exclusive `flock` on `path/.lock` without waiting: a
second process asking for it is refused at once, with the holder named (pid,
command, start time). The operating system releases the lock when its holder
exits, however it exits (a SIGKILL, a crash), so a dead run never leaves a stale
lock behind. The lock file itself stays; a directory the lock created and nothing
else wrote to is removed again on release.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
import time

from bn_keras.errors import InUse, Unusable, cannot_write

LOCK_FILE = ".lock"


class DirectoryLock:
    """Exclusive use of `path` by this process, for a `with` block. `what` names the
    directory in messages ("workdir", "model directory", ...) and `argument` the setting
    that chooses another."""

    def __init__(self, path: str, what: str = "workdir", argument: str = "`workdir`"):
        self.path, self.what, self.argument = path, what, argument
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> DirectoryLock:
        self._created = not os.path.exists(self.path)
        lock = os.path.join(self.path, LOCK_FILE)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise cannot_write(self.path, e, f"choose a writable {self.argument}") from None
        while True:
            fd = self._open(lock)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise InUse(f"{self.what} {self.path!r} is in use by {holder}; wait for it "
                            f"to finish or stop it, or choose another {self.argument}."
                            ) from None
            # Locked: but is it still the file at that path? A holder that tidied up
            # (__exit__) may have unlinked it between our open and our lock; a lock on a
            # deleted file excludes no one, so take the new one.
            if _same_file(fd, lock):
                break
            os.close(fd)
        self._fd = fd
        _write_holder(fd)
        return self

    def _open(self, lock: str) -> int:
        """The lock file's descriptor; a link or a directory at its place is refused."""
        if os.path.islink(lock) or os.path.isdir(lock):
            kind = "a symbolic link" if os.path.islink(lock) else "a directory"
            raise Unusable(f"{lock} is {kind}, not the lock file bn_keras writes there: "
                           f"remove it (or choose another {self.argument}).")
        try:
            return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise cannot_write(lock, e, f"choose a writable {self.argument}") from None

    def __exit__(self, *exc) -> None:
        try:
            if self._created and os.listdir(self.path) == [LOCK_FILE]:
                os.remove(os.path.join(self.path, LOCK_FILE))
                os.rmdir(self.path)
        except OSError:
            pass  # a directory we could not tidy is still a valid one
        finally:
            os.close(self._fd)  # releases the lock
            self._fd = None


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _write_holder(fd: int) -> None:
    record = {"pid": os.getpid(), "command": shlex.join([os.path.basename(sys.executable),
                                                         *sys.argv]),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
    except OSError:
        pass  # the lock holds without its description (a full disk, say)


def _read_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode())
        return (f"process {record['pid']} ({record['command']}), started "
                f"{record['started']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
