"""The BN study machinery (bn_keras.study), the tutorial's network, and the keras-tuner search."""

import os

import keras
import numpy as np
import pytest

from bn_keras import models, study, training, tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _base(tmp_path, **overrides):
    values = dict(dataset="synthetic", synthetic_examples=256, epochs=2, batch_size=32,
                  bn_momentum=0.9, verbose=0, workdir=str(tmp_path), probe_size=32)
    values.update(overrides)
    return training.TrainConfig(**values)


def test_tutorial_network_is_the_no_bn_network():
    """BN built but never called: 62,006 parameters and the no-BN forward pass."""
    tutorial, plain = models.lenet_tutorial("keras"), models.lenet_cifar("none")
    assert tutorial.count_params() == plain.count_params() == 62_006
    assert not tutorial.bn1.built and not tutorial.bn2.built
    plain.set_weights(tutorial.get_weights())
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(tutorial(x, training=True).numpy(), plain(x, training=True).numpy(),
                               atol=1e-6)


def test_loss_every_n_recovers_window_means():
    callback = study.LossEveryN(2)
    callback.on_epoch_begin(0)
    for batch, loss in enumerate([4.0, 2.0, 3.0, 1.0]):  # per-batch losses
        running_mean = np.mean([4.0, 2.0, 3.0, 1.0][: batch + 1])
        callback.on_train_batch_end(batch, {"loss": running_mean})
    assert callback.points == [(2, pytest.approx(3.0)), (4, pytest.approx(2.0))]


def test_loss_every_n_is_the_same_with_steps_per_execution(tmp_path):
    """Several steps per tf.function call (how the full study runs) give the same curve."""
    curves = []
    for k in (1, 2):
        callback = study.LossEveryN(4)
        training.run(_base(tmp_path / str(k), steps_per_execution=k, bn="custom"),
                     extra_callbacks=[callback])
        curves.append(callback.points)
    assert [s for s, _ in curves[0]] == [s for s, _ in curves[1]] == [4, 8, 12, 16]
    np.testing.assert_allclose([v for _, v in curves[1]], [v for _, v in curves[0]], rtol=1e-5)


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


def test_epochs_to_reach():
    assert study.epochs_to_reach([0.3, 0.45, 0.55], 0.4) == 2
    assert study.epochs_to_reach([0.3], 0.4) is None


def test_run_study_summarizes_plots_and_resumes(tmp_path):
    arms = [study.arm("no_bn", bn="none"), study.arm("our_bn", bn="custom"),
            study.arm("tutorial", model="lenet_tutorial", bn="keras")]
    results = study.run_study(arms, [0, 1], _base(tmp_path), str(tmp_path / "runs"),
                              loss_every=4)
    assert len(results) == 6
    assert all(len(r["test_accuracy_per_epoch"]) == 2 and r["loss_curve"] for r in results)
    by_arm = {(r["arm"], r["seed"]): r for r in results}
    # The tutorial's network trains the no-BN parameters (its BN layers hold none).
    assert by_arm[("tutorial", 0)]["num_params"] == by_arm[("no_bn", 0)]["num_params"] == 62_006
    assert by_arm[("our_bn", 0)]["num_params"] == 62_684
    rows = study.summarize(results)
    assert [r["arm"] for r in rows] == ["no_bn", "our_bn", "tutorial"]
    assert "±" in rows[0]["final_test_accuracy"]
    png = study.plot_loss_curves(results, str(tmp_path / "loss.png"), "t")
    assert os.path.getsize(png) > 1000
    assert os.path.isdir(tmp_path / "runs" / "our_bn_seed0" / "tensorboard" / "hparams")
    again = study.run_study(arms, [0, 1], _base(tmp_path), str(tmp_path / "runs"))
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in results]


def test_tuner_runs_two_trials_and_retrains_the_best(tmp_path):
    base = _base(tmp_path, epochs=1)
    tuner = tuning.make_tuner("random", base, str(tmp_path / "tuner"), max_trials=2, max_epochs=1)
    rows = tuning.search(tuner, 1, str(tmp_path / "tb"))
    assert len(rows) == 2
    assert {"bn", "learning_rate", "optimizer", "batch_size"} <= set(rows[0])
    assert rows[0]["val_accuracy"] >= rows[1]["val_accuracy"]
    best = tuning.retrain_best(tuner, str(tmp_path), epochs=1)
    assert best["hyperparameters"] == {k: v for k, v in rows[0].items()
                                       if k not in ("trial", "val_accuracy")}
    assert 0.0 <= best["test_accuracy"] <= 1.0
    with pytest.raises(ValueError, match="Unknown tuner='grid'"):
        tuning.make_tuner("grid", base, str(tmp_path), 1, 1)
