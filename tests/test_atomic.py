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


def test_publish_directory_replaces_in_one_step_and_flushes_first(tmp_path, monkeypatch):
    """Every file and the directory are fsynced before the rename that publishes them, and
    the parent after it; an existing target is exchanged, never missing."""
    target, tmp = tmp_path / "epoch-0002", tmp_path / ".tmp-0002"
    target.mkdir()
    (target / "weights").write_text("old")
    tmp.mkdir()
    (tmp / "weights").write_text("new")
    calls = []
    fsync, exchange = atomic.fsync, atomic._exchange

    def exchanging(a, b):
        calls.append(("exchange", os.path.basename(a), os.path.basename(b)))
        assert os.path.exists(target)  # never missing
        return exchange(a, b)

    monkeypatch.setattr(atomic, "fsync", lambda p: (calls.append(("fsync", os.path.relpath(
        p, tmp_path))), fsync(p)))
    monkeypatch.setattr(atomic, "_exchange", exchanging)
    atomic.publish_directory(str(tmp), str(target))
    assert calls == [("fsync", ".tmp-0002/weights"), ("fsync", ".tmp-0002"),
                     ("exchange", ".tmp-0002", "epoch-0002"), ("fsync", ".")]
    assert (target / "weights").read_text() == "new" and not tmp.exists()


def test_publish_directory_without_an_exchange_moves_the_old_version_aside(tmp_path,
                                                                          monkeypatch):
    target, tmp = tmp_path / "1", tmp_path / ".tmp-1"
    for directory, text in ((target, "old"), (tmp, "new")):
        directory.mkdir()
        (directory / "saved_model.pb").write_text(text)
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    atomic.publish_directory(str(tmp), str(target))
    assert (target / "saved_model.pb").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["1"]


def test_a_replaced_file_is_flushed_before_its_rename(tmp_path, monkeypatch):
    order = []
    fsync, replace = atomic.fsync, os.replace
    monkeypatch.setattr(atomic, "fsync", lambda p: (order.append(("fsync", p)), fsync(p)))
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append(("replace", b)),
                                                     replace(a, b)))
    path = str(tmp_path / "state.json")
    atomic.write_json(path, {"epoch": 2})
    tmp = atomic.temporary_path(path)
    assert order == [("fsync", tmp), ("replace", path), ("fsync", str(tmp_path))]
