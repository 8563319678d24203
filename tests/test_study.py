"""The BN study machinery (bn_keras.study), the tutorial's network, and the keras-tuner search."""

import os

import keras
import numpy as np
import pytest

from bn_keras import models, plots, study
from bn_keras.config import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _base(tmp_path, **overrides):
    values = dict(dataset="synthetic", synthetic_examples=256, epochs=2, batch_size=32,
                  bn_momentum=0.9, verbose=0, workdir=str(tmp_path), probe_size=32)
    values.update(overrides)
    return TrainConfig(**values)


def test_tutorial_network_is_the_no_bn_network():
    """BN built but never called: 62,006 parameters and the no-BN forward pass."""
    tutorial, plain = models.lenet_tutorial("keras"), models.lenet_cifar("none")
    assert tutorial.count_params() == plain.count_params() == 62_006
    assert not tutorial.bn1.built and not tutorial.bn2.built
    plain.set_weights(tutorial.get_weights())
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(tutorial(x, training=True).numpy(), plain(x, training=True).numpy(),
                               atol=1e-6)


@pytest.mark.slow
def test_a_run_does_not_depend_on_the_runs_before_it(tmp_path):
    """A resumed study (earlier runs cached, not re-trained) reproduces the uncached runs."""
    arms = [study.arm("no_bn", bn="none")]
    both = study.run_study(arms, [0, 1], _base(tmp_path, epochs=1), str(tmp_path / "both"),
                           loss_every=2)
    keras.utils.set_random_seed(123)  # whatever else ran earlier in this process
    alone = study.run_study(arms, [1], _base(tmp_path, epochs=1), str(tmp_path / "alone"),
                            loss_every=2)
    assert alone[0]["loss_curve"] == both[1]["loss_curve"]
    assert alone[0]["test_accuracy"] == both[1]["test_accuracy"]


def _fake_run(arm, seed, accuracies, losses, windows_per_epoch=2):
    return {"arm": arm, "seed": seed, "test_accuracy": accuracies[-1],
            "test_accuracy_per_epoch": accuracies,
            "loss_curve": [[2 * (i + 1), v, i // windows_per_epoch + 1]
                           for i, v in enumerate(losses)]}


def test_per_epoch_rows_average_each_epochs_loss_windows():
    results = [_fake_run("a", 0, [0.3, 0.5], [4.0, 2.0, 1.0, 1.0]),
               _fake_run("a", 1, [0.5, 0.7], [2.0, 2.0, 3.0, 1.0]),
               _fake_run("a", 2, [0.4], [3.0, float("nan")])]  # diverged in epoch 1
    rows = study.per_epoch_rows(results)
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
    near = study.agreement(base + close, "x", "y")
    assert near["accuracy_agrees"] and near["windows_within_seed_range"] == 2
    assert not near["identical"]
    apart = study.agreement(base + far, "x", "z")
    assert not apart["accuracy_agrees"] and apart["windows_within_seed_range"] == 0
    same = study.agreement(base + [dict(r, arm="w") for r in base], "x", "w")
    assert same["identical"] and same["accuracy_agrees"] and same["accuracy_difference"] == 0
    # A diverged seed (shorter, NaN curve) is compared over the common windows.
    short = [dict(close[0], loss_curve=[[2, float("nan"), 1]])] + close[1:]
    cut = study.agreement(base + short, "x", "y")
    assert cut["windows"] == 1 and not np.isnan(cut["two_standard_errors"])


def test_epochs_to_reach():
    assert study.epochs_to_reach([0.3, 0.45, 0.55], 0.4) == 2
    assert study.epochs_to_reach([0.3], 0.4) is None


@pytest.mark.slow
def test_run_study_summarizes_plots_and_resumes(tmp_path, monkeypatch):
    # (The tutorial's arm, the no-BN network in a run: test_study_report's compare study.)
    arms = [study.arm("no_bn", bn="none"), study.arm("our_bn", bn="custom")]
    results = study.run_study(arms, [0, 1], _base(tmp_path), str(tmp_path / "runs"),
                              loss_every=4)
    assert len(results) == 4
    assert all(len(r["test_accuracy_per_epoch"]) == 2 and r["loss_curve"] for r in results)
    by_arm = {(r["arm"], r["seed"]): r for r in results}
    assert by_arm[("no_bn", 0)]["num_params"] == 62_006
    assert by_arm[("our_bn", 0)]["num_params"] == 62_684
    rows = study.summarize(results)
    assert [r["arm"] for r in rows] == ["no_bn", "our_bn"]
    assert "±" in rows[0]["final_test_accuracy"]
    png = plots.plot_loss_curves(results, str(tmp_path / "loss.png"), "t")
    assert os.path.getsize(png) > 1000
    assert os.path.isdir(tmp_path / "runs" / "our_bn_seed0" / "tensorboard" / "hparams")
    monkeypatch.setattr(study.training, "run", lambda config: pytest.fail("trained again"))
    again = study.run_study(arms, [0, 1], _base(tmp_path), str(tmp_path / "runs"), loss_every=4)
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in results]
