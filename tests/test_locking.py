"""bn_keras.locking: one writer per directory, also against a lock file swapped under it."""

import fcntl
import os

import pytest

from bn_keras import locking
from bn_keras.errors import InUse, Unusable
from bn_keras.locking import DirectoryLock


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_a_link_or_a_directory_at_the_lock_is_refused_naming_the_lock(tmp_path, kind):
    workdir = tmp_path / "w"
    workdir.mkdir()
    lock = workdir / ".lock"
    if kind == "symlink":
        lock.symlink_to(tmp_path / "elsewhere")
    else:
        lock.mkdir()
    with pytest.raises(Unusable, match=rf"{lock} is a (symbolic link|directory), not the lock "
                                       "file bn_keras writes there: remove it"):
        DirectoryLock(str(workdir)).__enter__()


def test_a_lock_file_unlinked_while_taken_is_taken_again(tmp_path, monkeypatch):
    """A holder that tidies up unlinks .lock: a process that opened the old file just before
    must not hold a lock on a deleted file while a third locks the new one."""
    workdir = tmp_path / "w"
    workdir.mkdir()
    lock = workdir / ".lock"
    lock.write_text("")
    calls = []
    flock = fcntl.flock

    def swapped_once(fd, operation):
        calls.append(fd)
        if len(calls) == 1:  # between our open and our lock, the file is replaced
            lock.unlink()
            lock.write_text("")
        return flock(fd, operation)

    monkeypatch.setattr(locking.fcntl, "flock", swapped_once)
    with DirectoryLock(str(workdir)) as held:
        assert len(calls) == 2  # the first lock was on the old file: taken again
        assert os.path.samestat(os.fstat(held._fd), os.stat(lock))
        monkeypatch.setattr(locking.fcntl, "flock", flock)
        with pytest.raises(InUse):
            DirectoryLock(str(workdir)).__enter__()  # the live file is the one held
