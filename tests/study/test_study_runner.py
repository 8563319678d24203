"""bn_keras.study.runner: arms x seeds of cached runs, independent of each other."""

import os

import keras
import pytest

from bn_keras.study import plots, runner, statistics
from bn_keras.study.runner import Arm
from bn_keras.train.config import TrainConfig

pytestmark = pytest.mark.slow  # every test here trains


def _base(tmp_path, **overrides):
    values = dict(dataset="synthetic", synthetic_examples=256, epochs=2, batch_size=32,
                  bn_momentum=0.9, verbose=0, workdir=str(tmp_path), probe_size=32)
    values.update(overrides)
    return TrainConfig(**values)


def test_a_run_does_not_depend_on_the_runs_before_it(tmp_path):
    """A resumed study (earlier runs cached, not re-trained) reproduces the uncached runs."""
    arms = [Arm("no_bn", bn="none")]
    both = runner.run_study(arms, [0, 1], _base(tmp_path, epochs=1), str(tmp_path / "both"),
                           loss_every=2)
    keras.utils.set_random_seed(123)  # whatever else ran earlier in this process
    alone = runner.run_study(arms, [1], _base(tmp_path, epochs=1), str(tmp_path / "alone"),
                            loss_every=2)
    assert alone[0].result.loss_curve == both[1].result.loss_curve
    assert alone[0].result.test_accuracy == both[1].result.test_accuracy


def test_run_study_summarizes_plots_and_resumes(tmp_path, monkeypatch):
    # (The tutorial's arm, the no-BN network in a run: test_study_report's compare study.)
    arms = [Arm("no_bn", bn="none"), Arm("our_bn", bn="custom")]
    results = runner.run_study(arms, [0, 1], _base(tmp_path), str(tmp_path / "runs"),
                              loss_every=4)
    assert len(results) == 4
    assert all(len(r.result.test_accuracy_per_epoch) == 2 and r.result.loss_curve
               for r in results)
    runs = {(r.arm, r.seed): r.result for r in results}
    assert runs[("no_bn", 0)].num_params == 62_006
    assert runs[("our_bn", 0)].num_params == 62_684
    rows = statistics.summarize(results)
    assert [r["arm"] for r in rows] == ["no_bn", "our_bn"]
    assert "±" in rows[0]["final_test_accuracy"]
    png = plots.plot_loss_curves(results, str(tmp_path / "loss.png"), "t")
    assert os.path.getsize(png) > 1000
    assert os.path.isdir(tmp_path / "runs" / "our_bn_seed0" / "tensorboard" / "hparams")
    monkeypatch.setattr(runner.training, "run", lambda config: pytest.fail("trained again"))
    again = runner.run_study(arms, [0, 1], _base(tmp_path), str(tmp_path / "runs"), loss_every=4)
    assert [r.result.test_accuracy for r in again] == [r.result.test_accuracy
                                                      for r in results]
