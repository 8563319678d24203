"""experiments/compare_bn.py: each study's report, table and plots, on mocked CIFAR-10."""

import csv
import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "compare_bn.py")


@pytest.mark.parametrize("name, arms, plots, window", [
    ("compare", ["no_bn", "tutorial_as_written", "keras_bn", "our_bn"], ["_loss.png"], 500),
    ("momentum", ["momentum_0.9", "momentum_0.99"], ["_loss.png"], 50),
    ("depth", ["resnet20_no_bn", "resnet20_bn"], ["_loss.png", "_grad_norms.png",
                                              "_grad_norms_training.png"], 20),
])
def test_quick_study_writes_report_table_and_plots(tmp_path, experiment, name, arms, plots,
                                                  window):
    script = experiment("compare_bn")
    with tfds.testing.mock_data(num_examples=40):
        out = script.run(name, quick=True, seeds=2, data_dir=None,
                         output_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"))
    stem = tmp_path / "results" / f"study_{name}_quick"
    with open(f"{stem}.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["arm"] for r in table] == arms
    assert all(r["seeds"] == "2" and "±" in r["final_test_accuracy"] for r in table)
    report = open(f"{stem}.md").read()
    assert f"# BN study: {name} (quick mode)" in report
    for suffix in plots:
        assert os.path.getsize(f"{stem}{suffix}") > 1000
        assert f"](study_{name}_quick{suffix})" in report
    # One tf.function call per loss window, and every run's settings are recorded.
    assert {r["config"]["steps_per_execution"] for r in out["results"]} == {window}
    assert f"| epoch | {arms[0]} test acc | {arms[0]} train loss |" in report
    if name == "compare":
        assert "keras_bn vs our_bn: " in report
        # The tutorial's network is the no-BN network: same seed, same run.
        assert "no_bn vs tutorial_as_written: seed for seed, the runs are identical" in report
    if name == "momentum":
        assert all(r["test_acc_batch_stats"] != "-" for r in table)
    if name == "depth":
        assert "| resnet20_no_bn | init |" in report


def test_unknown_study_is_one_line_and_non_zero_exit():
    proc = subprocess.run([sys.executable, SCRIPT, "--study=width"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "--study" in proc.stderr and "Traceback" not in proc.stderr
