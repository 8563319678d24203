"""bn_keras.atomic: a file is written whole or not at all."""

import os

import pytest

from bn_keras import atomic


def test_write_and_read_json(tmp_path):
    path = str(tmp_path / "sub" / "x.json")
    atomic.write_json(path, {"b": 1, "a": [1.5, None]})
    assert atomic.read_json(path) == {"a": [1.5, None], "b": 1}
    assert atomic.read_json(str(tmp_path / "missing.json"), default=3) == 3
    assert os.listdir(tmp_path / "sub") == ["x.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "x.txt")
    atomic.write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic.write_text(path, "new")
    monkeypatch.undo()
    assert open(path).read() == "old"
