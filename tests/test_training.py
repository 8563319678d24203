"""bn_keras.training.run end to end on synthetic data, and one real-data run."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from bn_keras import diagnostics, training
from bn_keras.layers import BatchNormalization


def _config(workdir, **overrides):
    values = dict(dataset="synthetic", synthetic_examples=512, epochs=2, batch_size=32, bn_momentum=0.9,
                  workdir=str(workdir), verbose=0, log_every_n_steps=2, probe_size=64)
    values.update(overrides)
    return training.TrainConfig(**values)


def _csv_epochs(workdir):
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _tags(logdir):
    acc = event_accumulator.EventAccumulator(logdir, size_guidance={"tensors": 0})
    acc.Reload()
    return set(acc.Tags()["tensors"])


def test_run_writes_everything_under_the_workdir(tmp_path):
    metrics = training.run(_config(tmp_path))
    assert metrics["test_accuracy"] > 0.3  # 10 synthetic classes: chance is 0.1
    assert metrics["replicas"] == 1 and not metrics["diverged"]
    for name in ("config.json", "metrics.csv", "final_metrics.json", "final.keras",
                 "checkpoints/best.keras"):
        assert os.path.exists(tmp_path / name), name
    assert not os.path.exists(tmp_path / "backup")  # removed once the run finished
    assert _csv_epochs(tmp_path) == [0, 1]
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["bn"] == "custom"
    with open(tmp_path / "final_metrics.json") as f:
        assert json.load(f)["test_accuracy"] == metrics["test_accuracy"]
    best = keras.models.load_model(tmp_path / "checkpoints" / "best.keras")
    assert any(isinstance(l, BatchNormalization) for l in best.layers)


def test_tensorboard_holds_scalars_and_bn_diagnostics(tmp_path):
    training.run(_config(tmp_path))
    tb = tmp_path / "tensorboard"
    train_tags = _tags(str(tb / "train"))
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "batch_loss"} <= train_tags
    assert {"epoch_loss", "epoch_accuracy"} <= _tags(str(tb / "validation"))
    diag = _tags(str(tb / "bn_diagnostics"))
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        assert f"grad_norm/{layer}" in diag
        assert f"preactivation_mean/{layer}_relu" in diag
        assert f"preactivation_std/{layer}_relu" in diag
        for weight in ("gamma", "beta", "moving_mean", "moving_variance"):
            assert f"bn/{layer}_bn/{weight}" in diag
    assert "grad_norm/logits" in diag
    # At the start and after each of the 2 epochs of 16 steps; norms read back as numbers.
    norms = diagnostics.read_scalars(str(tb / "bn_diagnostics"), "grad_norm/")
    assert set(norms) == {"conv1", "conv2", "fc1", "fc2", "logits"} | {
        f"{layer}_bn" for layer in ("conv1", "conv2", "fc1", "fc2")}
    assert [step for step, _ in norms["conv1"]] == [0, 16, 32]
    assert all(np.isfinite(v) and v > 0 for _, v in norms["conv1"])


def test_diagnostics_every_n_steps_with_chunks_that_do_not_divide_the_epoch(tmp_path):
    # 10 steps per epoch, reported every 4 (steps_per_execution): writes at the start, on
    # passing each multiple of 4, and at each epoch's end, each step once.
    training.run(_config(tmp_path, synthetic_examples=320, steps_per_execution=4,
                         diagnostics_every_n_steps=4))
    norms = diagnostics.read_scalars(str(tmp_path / "tensorboard" / "bn_diagnostics"),
                                     "grad_norm/")
    assert [step for step, _ in norms["conv1"]] == [0, 4, 8, 10, 14, 18, 20]


def test_same_seed_gives_identical_runs(tmp_path):
    first = training.run(_config(tmp_path / "a", seed=3))
    second = training.run(_config(tmp_path / "b", seed=3))
    assert first["test_loss"] == second["test_loss"]
    assert first["test_accuracy"] == second["test_accuracy"]


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_interrupted_run_resumes_without_losing_or_repeating_epochs(tmp_path):
    config = _config(tmp_path, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        training.run(config, extra_callbacks=[_Interrupt()])
    assert _csv_epochs(tmp_path) == [0]
    assert os.path.isdir(tmp_path / "backup")
    metrics = training.run(config)
    assert metrics["epochs_run_this_session"] == 2  # epochs 1 and 2; epoch 0 restored
    assert _csv_epochs(tmp_path) == [0, 1, 2]


def test_workdir_guards(tmp_path):
    training.run(_config(tmp_path, epochs=1))
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        training.run(_config(tmp_path, epochs=1))
    os.remove(tmp_path / "final_metrics.json")
    with pytest.raises(ValueError, match=r"other settings \(learning_rate\)"):
        training.run(_config(tmp_path, epochs=1, learning_rate=0.5))


def test_mirrored_strategy_over_two_logical_cpus(tmp_path, mirrored_strategy):
    metrics = training.run(_config(tmp_path, batch_size=16), strategy_override=mirrored_strategy)
    assert metrics["replicas"] == 2 and metrics["global_batch_size"] == 32
    assert metrics["test_accuracy"] > 0.3
    model = keras.models.load_model(tmp_path / "final.keras")
    norms = [l for l in model.layers if isinstance(l, BatchNormalization)]
    assert norms and all(l.synchronized for l in norms)


@pytest.mark.parametrize("overrides", [
    dict(bn="none", optimizer="sgd", lr_schedule="cosine"),
    dict(bn="keras", lr_schedule="warmup_cosine", augment=True),
    dict(bn="custom", virtual_batch_size=8, mixed_precision="mixed_float16"),
    dict(model="conv1d_example", bn="custom", batch_size=16, synthetic_examples=64),
])
def test_variants_train(tmp_path, overrides):
    metrics = training.run(_config(tmp_path, epochs=1, **overrides))
    assert np.isfinite(metrics["test_loss"])


def test_divergence_is_reported_not_hidden(tmp_path):
    metrics = training.run(_config(tmp_path, epochs=2, bn="none", optimizer="sgd",
                                   learning_rate=1e8))
    assert metrics["diverged"] and metrics["diverged_at_epoch"] == 0


@pytest.mark.parametrize("overrides,pattern", [
    (dict(bn="batch"), "bn='batch' is not one of none, keras, custom"),
    (dict(epochs=0), "epochs must be at least 1"),
    (dict(learning_rate=-1.0), "learning_rate must be positive"),
    (dict(model="conv1d_example", dataset="cifar10"), "synthetic"),
])
def test_bad_config_names_the_field(tmp_path, overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        _config(tmp_path, **overrides).validate()


def test_learning_rate_schedules():
    cosine = training.learning_rate(_config("x", lr_schedule="cosine", learning_rate=0.1), 10)
    assert float(cosine(0)) == pytest.approx(0.1) and float(cosine(20)) == pytest.approx(0.0)
    warm = training.learning_rate(_config("x", lr_schedule="warmup_cosine", learning_rate=0.1,
                                          warmup_epochs=1, epochs=3), 10)
    assert float(warm(0)) == pytest.approx(0.0)
    assert float(warm(10)) == pytest.approx(0.1)
    assert float(warm(30)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.real_data
def test_lenet_with_our_bn_learns_real_cifar10_in_one_epoch(tmp_path, cifar10_dir):
    metrics = training.run(training.TrainConfig(
        model="lenet", bn="custom", dataset="cifar10", data_dir=cifar10_dir, download=False,
        epochs=1, batch_size=128, workdir=str(tmp_path), verbose=0))
    assert metrics["test_accuracy"] > 0.35
