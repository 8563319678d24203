"""bn_keras.train.report: a finished run's report from its work directory."""

import csv
import json
import os

import pytest

from bn_keras.train import report, training
from bn_keras.train.config import TrainConfig


@pytest.mark.slow
def test_report_has_every_epoch_and_the_final_accuracy(tmp_path):
    config = TrainConfig(dataset="synthetic", synthetic_examples=256, epochs=2, batch_size=32,
                         workdir=str(tmp_path / "run"), verbose=0, test_every_epoch=True,
                         recalibrate_bn_batches=2)
    metrics = training.run(config)
    export = {"saved_model": "saved_models/r/1", "source": "runs/r/checkpoints/best.keras",
              "bn_folded": 4, "bn_kept": {},
              "folded_vs_unfolded": {"max_abs_logit_diff": 3e-6, "class_mismatch_rate": 0.0},
              "served": {"test_accuracy": 0.5, "images": 64}}
    md = report.write(config.workdir, str(tmp_path / "out"), "r", "the command", 12.0,
                      export=export)
    text = open(md).read()
    assert text.startswith("# r\n\nCommand: `the command`")
    assert f"**{metrics.test_accuracy:.4f}**" in text and "12 s (0.2 min)" in text
    assert f"Measured on: {metrics.measured_on}." in text
    moving = metrics.test_variants["trained_weights_moving_statistics"].test_accuracy
    assert f"- trained weights, moving BN statistics: {moving:.4f}" in text
    assert "## Serving" in text
    assert "| saved_models/r/1 | runs/r/checkpoints/best.keras | 4 |" in text
    summary = json.loads((tmp_path / "out" / "r.json").read_text())
    assert summary["test_accuracy"] == metrics.test_accuracy and summary["finished"]
    assert (summary["epochs"], summary["served_test_accuracy"]) == (2, 0.5)
    with open(tmp_path / "out" / "r.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[-1]["test_accuracy"] == f"{metrics.test_accuracy:.4f}"
    assert os.path.getsize(tmp_path / "out" / "r.png") > 1000
    with pytest.raises(FileNotFoundError, match="no completed epoch"):
        report.write(str(tmp_path / "nothing"), str(tmp_path / "out"), "x", "c")


@pytest.mark.slow
def test_a_run_without_bn_reports_weights_only(tmp_path):
    config = TrainConfig(dataset="synthetic", synthetic_examples=128, epochs=1, batch_size=32,
                         bn="none", ema_momentum=0.9, workdir=str(tmp_path / "run"), verbose=0)
    metrics = training.run(config)
    assert metrics.bn_statistics is None
    text = open(report.write(config.workdir, str(tmp_path / "out"), "n", "c")).read()
    ema = metrics.test_variants["averaged_weights_trained_statistics"].test_accuracy
    assert "The run keeps the averaged weights. " in text
    assert f"- EMA weights: {ema:.4f}" in text and "BN statistics" not in text


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
