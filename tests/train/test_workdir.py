"""bn_keras.train.workdir: commits that survive a kill, and the guards."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from bn_keras import atomic, models
from bn_keras.train import workdir
from bn_keras.train.config import TrainConfig
from bn_keras.train.results import RunResult


def _model():
    model = models.lenet_cifar("custom")
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _state(epoch):
    return {"epoch": epoch, "step": 10 * epoch,
            "history": [{"epoch": e, "step": 10 * e, "loss": 1.0 / e}
                        for e in range(1, epoch + 1)], "callbacks": {}}


def test_commit_keeps_the_last_two_epochs_and_restores_the_latest(tmp_path):
    w = workdir.Workdir(str(tmp_path))
    model = _model()
    w.commit(model, _state(1))
    w.commit(model, _state(2))
    model.layers[1].kernel.assign(model.layers[1].kernel + 1.0)
    model.optimizer.iterations.assign(7)
    w.commit(model, _state(3))
    assert sorted(os.listdir(tmp_path / "backup")) == ["epoch-0002", "epoch-0003"]
    latest = w.latest()
    assert (latest.epoch, latest.step, len(latest.history)) == (3, 30, 3)
    fresh = _model()
    w.restore(fresh, latest)
    np.testing.assert_array_equal(fresh.layers[1].kernel.numpy(), model.layers[1].kernel.numpy())
    assert int(fresh.optimizer.iterations.numpy()) == 7  # the optimizer's state too
    assert open(tmp_path / "metrics.csv").read().splitlines() == [
        "epoch,loss,step", "1,1.0,10", "2,0.5,20", "3,0.3333333333333333,30"]


def test_history_written_from_epoch_0_by_earlier_versions_reads_from_1(tmp_path):
    w = workdir.Workdir(str(tmp_path))
    old = _state(2)
    old["history"] = [{**row, "epoch": row["epoch"] - 1} for row in old["history"]]
    w.commit(_model(), old)
    assert [row["epoch"] for row in w.latest().history] == [1, 2]


def test_a_commit_cut_short_leaves_the_previous_epoch(tmp_path, monkeypatch):
    w = workdir.Workdir(str(tmp_path))
    model = _model()
    w.commit(model, _state(1))

    def killed(path, value, indent=2):
        raise KeyboardInterrupt  # as if killed after the weights, before the state file

    monkeypatch.setattr(atomic, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        w.commit(model, _state(2))
    monkeypatch.undo()
    assert w.latest().epoch == 1
    w.start(TrainConfig(workdir=str(tmp_path)), w.latest())  # a restart cleans up
    assert sorted(os.listdir(tmp_path / "backup")) == ["epoch-0001"]


def test_check_refuses_without_writing(tmp_path):
    config = TrainConfig(workdir=str(tmp_path / "run"), epochs=2)
    w = workdir.Workdir(config.workdir)
    assert w.check(config).epoch == 0 and not os.path.exists(config.workdir)
    w.start(config, w.latest())
    w.commit(_model(), _state(1))
    assert w.check(config).epoch == 1
    with pytest.raises(ValueError, match=r"other settings \(batch_size: 128 -> 64\)"):
        w.check(dataclasses.replace(config, batch_size=64))
    atomic.write_json(w.final_metrics, RunResult(0.5, 0.5, epochs=2, history=[],
                                                 loss_curve=[]).to_json())
    with pytest.raises(FileExistsError, match="finished run of 2 epochs"):
        w.check(config)
    assert workdir.describe(config.workdir) == f"1 of 2 epochs saved in {config.workdir}"


def test_save_model_is_atomic(tmp_path):
    w = workdir.Workdir(str(tmp_path))
    model = _model()
    w.save_model(model, w.best)
    assert os.listdir(tmp_path / "checkpoints") == ["best.keras"]
    assert keras.models.load_model(w.best).count_params() == model.count_params()


def test_a_commit_is_on_the_disk_before_the_epoch_two_back_is_deleted(tmp_path, monkeypatch):
    """Only state.json was fsynced once: a power loss could leave both kept commits torn.
    Now the new commit's files and directory are flushed and renamed into place, and its
    parent flushed, before the epoch two back is removed."""
    from bn_keras import atomic

    w = workdir.Workdir(str(tmp_path))
    model = _model()
    w.commit(model, _state(1))
    w.commit(model, _state(2))
    calls = []
    publish, rmtree = atomic.publish_directory, workdir.shutil.rmtree
    monkeypatch.setattr(atomic, "publish_directory",
                        lambda tmp, target: (calls.append(("publish", os.path.basename(target))),
                                             publish(tmp, target)))
    monkeypatch.setattr(workdir.shutil, "rmtree",
                        lambda path, **kw: (calls.append(("remove", os.path.basename(path))),
                                            rmtree(path, **kw)))
    w.commit(model, _state(3))
    assert calls.index(("publish", "epoch-0003")) < calls.index(("remove", "epoch-0001"))


def test_the_committed_state_carries_its_checksum(tmp_path):
    w = workdir.Workdir(str(tmp_path))
    w.commit(_model(), _state(1))
    path = tmp_path / "backup" / "epoch-0001" / "state.json"
    state = json.loads(path.read_text())
    assert state["checksum"] == workdir.checksummed(state)["checksum"]
    state["history"][0]["loss"] = 0.5
    path.write_text(json.dumps(state))
    with pytest.raises(Exception, match="differs from the checksum recorded"):
        w.latest()
