"""bn_keras.study.report: each report section on mocked CIFAR-10, with the loss curve filled."""

import csv
import dataclasses
import os

import pytest
import tensorflow_datasets as tfds

from bn_keras.study import experiments, report


def _small(name, window, seeds):
    """The quick study, 2 epochs, with a loss window short enough for 40 mocked images."""
    study = experiments.get(name, quick=True, seeds=seeds)
    return dataclasses.replace(study, loss_window=window, base=dataclasses.replace(
        study.base, steps_per_execution=window, epochs=min(2, study.base.epochs)))


@pytest.mark.slow
@pytest.mark.parametrize("name, arms, plots, window, seeds", [
    ("compare", ["no_bn", "tutorial_as_written", "keras_bn", "our_bn"], ["_loss.png"], 2, 2),
    # One seed each below: the ± columns and the agreement check are compare's above.
    ("momentum", ["momentum_0.9", "momentum_0.99"], ["_loss.png"], 1, 1),
    ("depth", ["resnet20_no_bn", "resnet20_bn"], ["_loss.png", "_grad_norms.png",
                                              "_grad_norms_training.png"], 1, 1),
])
def test_quick_study_writes_report_table_and_plots(tmp_path, name, arms, plots, window, seeds):
    study = _small(name, window, seeds)
    with tfds.testing.mock_data(num_examples=40):
        out = report.conduct(study, str(tmp_path / "results"), str(tmp_path / "runs"),
                             command="the command")
    stem = tmp_path / "results" / f"study_{name}_quick"
    with open(f"{stem}.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["arm"] for r in table] == arms
    assert all(r["seeds"] == str(seeds) for r in table)
    assert all(("±" in r["final_test_accuracy"]) == (seeds > 1) for r in table)
    # Every run has a loss curve (one point per window), so every plot has lines.
    steps_per_epoch = -(-min(40, study.base.train_examples) // study.base.batch_size)
    for r in out.results:
        assert len(r.result.loss_curve) == study.base.epochs * (steps_per_epoch // window), r.arm
        assert r.config["steps_per_execution"] == window
    text = open(f"{stem}.md").read()
    assert text.startswith(f"# BN study: {name} (quick mode)\n\nCommand: `the command`")
    for suffix in plots:
        assert os.path.getsize(f"{stem}{suffix}") > 1000
        assert f"](study_{name}_quick{suffix})" in text
    assert f"| epoch | {arms[0]} test acc | {arms[0]} train loss |" in text
    assert "| - |" not in text.split("| epoch |")[1].split("\n\n")[0]  # no empty loss cell
    if name == "compare":
        assert "keras_bn vs our_bn: " in text
        # The tutorial's network is the no-BN network: same seed, same run.
        assert "no_bn vs tutorial_as_written: seed for seed, the runs are identical" in text
    if name == "momentum":
        assert all(r["test_acc_batch_stats"] not in ("", "-") for r in table)
        assert all(0 <= float(r["test_acc_re_estimated"]) <= 1 for r in table)
        assert "`test_acc_re_estimated`: BN's moving statistics re-estimated" in text
    if name == "depth":
        assert "| resnet20_no_bn | init |" in text


def test_progress_counts_finished_runs(tmp_path):
    study = experiments.get("placement", quick=True)
    done = tmp_path / "placement_quick" / "no_bn_seed1"
    done.mkdir(parents=True)
    (done / "study_result.json").write_text("{}")
    assert report.progress(study, str(tmp_path)).startswith(
        "1 of 9 runs of the placement study are done in")


@pytest.mark.slow
def test_the_normalization_batch_study_separates_it_from_the_sgd_batch(tmp_path):
    """Quick, on 40 mocked images at SGD batch 16: every arm of the first table (Ghost BN
    groups, BN, GroupNorm, LayerNorm, none), the moving / batch / re-estimated columns where
    there are BN statistics, the plot, and the small-batch table with its learning rate."""
    study = _small("norm_batch", 1, 1)
    study = dataclasses.replace(study, base=dataclasses.replace(study.base, batch_size=16))
    with tfds.testing.mock_data(num_examples=40):
        out = report.conduct(study, str(tmp_path / "results"), str(tmp_path / "runs"),
                             command="the command")
    assert [row["arm"] for row in out.rows] == [
        "ghost_bn_2", "ghost_bn_8", "bn_128", "group_norm", "layer_norm", "no_norm"]
    by_arm = {row["arm"]: row for row in out.rows}
    for arm in ("group_norm", "layer_norm", "no_norm"):
        assert by_arm[arm]["test_acc_batch_stats"] == by_arm[arm]["test_acc_re_estimated"] \
            == by_arm[arm]["test_acc_re_estimated_population"] == "-"
    for arm in ("ghost_bn_2", "bn_128"):
        assert by_arm[arm]["test_acc_re_estimated_population"] != "-"
    text = open(tmp_path / "results" / "study_norm_batch_quick.md").read()
    assert "## True small batches: SGD batch 8" in text
    assert "| bn | " in text and "| chosen_lr |" in text
    assert os.path.getsize(tmp_path / "results" / "study_norm_batch_quick.png") > 1000
    small = [r for r in out.results if r.config["batch_size"] == 8]
    assert {r.arm for r in small} == {"bn@lr0.001", "group_norm@lr0.001",
                                      "layer_norm@lr0.001", "no_norm@lr0.001"}
