"""bn_keras.errors: the one place that knows how a failed write is reported."""

import errno

import pytest

from bn_keras import errors


@pytest.mark.parametrize("error,expected", [
    (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
    (OSError(errno.ENOENT, "No such file or directory"), None),  # not a place to free
    (ValueError("Unable to synchronously create file (file write failed: errno = 28, ...)"),
     errno.ENOSPC),  # h5py
    (RuntimeError("...: Read-only file system"), errno.EROFS),  # TensorFlow's OpError text
    (ValueError("Unable to open: errno = 2"), None),
    (KeyError("x"), None),
])
def test_write_failure_reads_every_library_s_report(error, expected):
    assert errors.write_failure(error) == expected


def test_cannot_write_names_the_place_the_reason_and_what_to_do():
    e = errors.cannot_write("/runs/x/model.weights.h5", OSError(errno.ENOSPC, "full"))
    assert str(e) == ("cannot write /runs/x/model.weights.h5: No space left on device; free "
                      "some space on that disk.")
