"""bn_keras.train.report: a finished run's report from its work directory."""

import csv
import os

import pytest

from bn_keras.train import report, training
from bn_keras.train.config import TrainConfig


def test_report_has_every_epoch_and_the_final_accuracy(tmp_path):
    config = TrainConfig(dataset="synthetic", synthetic_examples=256, epochs=2, batch_size=32,
                         workdir=str(tmp_path / "run"), verbose=0, test_every_epoch=True)
    metrics = training.run(config)
    md = report.write(config.workdir, str(tmp_path / "out"), "r", "the command", 12.0)
    text = open(md).read()
    assert text.startswith("# r\n\nCommand: `the command`")
    assert f"**{metrics['test_accuracy']:.4f}**" in text and "12 s (0.2 min)" in text
    with open(tmp_path / "out" / "r.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[-1]["test_accuracy"] == f"{metrics['test_accuracy']:.4f}"
    assert os.path.getsize(tmp_path / "out" / "r.png") > 1000
    with pytest.raises(FileNotFoundError, match="no completed epoch"):
        report.write(str(tmp_path / "nothing"), str(tmp_path / "out"), "x", "c")


@pytest.mark.slow
def test_an_unfinished_run_is_reported_as_such(tmp_path, stop_at):
    config = TrainConfig(dataset="synthetic", synthetic_examples=256, epochs=3, batch_size=32,
                         workdir=str(tmp_path / "run"), verbose=0, test_every_epoch=True)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the third epoch: two are saved
        training.run(config, extra_callbacks=[stop_at(2, 0)])
    md = report.write(config.workdir, str(tmp_path / "out"), "u", "c")
    text = open(md).read()
    with open(config.workdir + "/metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert "**Unfinished**: stopped after 2 of 3 epochs" in text
    assert f"test accuracy after epoch 2: **{float(last['test_accuracy']):.4f}**" in text
    with open(tmp_path / "out" / "u.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
