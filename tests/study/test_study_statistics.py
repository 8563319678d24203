"""bn_keras.study.statistics: mean ± std over seeds, per epoch, and agreement of two arms."""

import dataclasses

import numpy as np

from bn_keras.study import statistics
from bn_keras.study.runner import StudyRun


def _fake_run(arm, seed, accuracies, losses, windows_per_epoch=2):
    """A study run as study_result.json keeps it."""
    return StudyRun.from_json({
        "arm": arm, "seed": seed, "overrides": {}, "wall_seconds": 1.0,
        "test_loss": 1.0, "test_accuracy": accuracies[-1], "epochs": len(accuracies),
        "history": [{"epoch": e, "test_accuracy": a} for e, a in enumerate(accuracies, 1)],
        "loss_curve": [[2 * (i + 1), v, i // windows_per_epoch + 1]
                       for i, v in enumerate(losses)]})


def _renamed(run, arm):
    return dataclasses.replace(run, arm=arm)


def test_per_epoch_rows_average_each_epochs_loss_windows():
    results = [_fake_run("a", 0, [0.3, 0.5], [4.0, 2.0, 1.0, 1.0]),
               _fake_run("a", 1, [0.5, 0.7], [2.0, 2.0, 3.0, 1.0]),
               _fake_run("a", 2, [0.4], [3.0, float("nan")])]  # diverged in epoch 1
    rows = statistics.per_epoch_rows(results)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["a test acc"] == "0.4000 ± 0.1000"  # sample std (ddof=1)
    assert rows[0]["a train loss"] == "2.5000 ± 0.7071 (n=2)"  # windows (4, 2), (2, 2)
    assert rows[1]["a train loss"] == "1.5000 ± 0.7071 (n=2)"  # windows (1, 1), (3, 1)
    assert rows[1]["a test acc"] == "0.6000 ± 0.1414 (n=2)"


def test_agreement_separates_noise_from_a_real_difference():
    base = [_fake_run("x", s, [a], [2.0 + d, 1.5 + d])
            for s, (a, d) in enumerate([(0.50, 0.0), (0.52, 0.1), (0.48, -0.1)])]
    close = [_fake_run("y", s, [a], [2.0 + d, 1.5 + d])
             for s, (a, d) in enumerate([(0.51, 0.05), (0.49, -0.05), (0.50, 0.0)])]
    far = [_fake_run("z", s, [a], [1.0, 0.5]) for s, a in enumerate([0.60, 0.61, 0.62])]
    near = statistics.agreement(base + close, "x", "y")
    assert near["accuracy_agrees"] and near["windows_within_seed_range"] == 2
    assert not near["identical"]
    apart = statistics.agreement(base + far, "x", "z")
    assert not apart["accuracy_agrees"] and apart["windows_within_seed_range"] == 0
    same = statistics.agreement(base + [_renamed(r, "w") for r in base], "x", "w")
    assert same["identical"] and same["accuracy_agrees"] and same["accuracy_difference"] == 0
    # A diverged seed (shorter, NaN curve) is compared over the common windows.
    short = [_fake_run("y", 0, [0.51], [float("nan")])] + close[1:]
    cut = statistics.agreement(base + short, "x", "y")
    assert cut["windows"] == 1 and not np.isnan(cut["two_standard_errors"])


def test_epochs_to_reach():
    assert statistics.epochs_to_reach([0.3, 0.45, 0.55], 0.4) == 2
    assert statistics.epochs_to_reach([0.3], 0.4) is None
