"""bn_keras.train.training.run end to end on synthetic data: outputs, TensorBoard, exact resume."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from bn_keras.layers import BatchNormalization
from bn_keras.train import callbacks, training, workdir
from bn_keras.train.config import TrainConfig
from bn_keras.train.events import read_scalars

# Columns of metrics.csv that are results; the others are timings.
RESULT_COLUMNS = ("epoch", "step", "loss", "accuracy", "val_loss", "val_accuracy",
                  "learning_rate")


def _config(workdir, **overrides):
    values = dict(dataset="synthetic", synthetic_examples=512, epochs=2, batch_size=32,
                  bn_momentum=0.9, workdir=str(workdir), verbose=0, log_every_n_steps=2,
                  probe_size=64)
    values.update(overrides)
    return TrainConfig(**values)


def _csv(workdir):
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def _results(workdir):
    """metrics.csv without its timing columns, and the final test metrics."""
    rows = [{k: row[k] for k in RESULT_COLUMNS} for row in _csv(workdir)]
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        final = json.load(f)
    return rows, final["test_loss"], final["test_accuracy"], final["loss_curve"]


def _events(logdir):
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}


@pytest.mark.slow
def test_run_writes_everything_under_the_workdir(tmp_path):
    metrics = training.run(_config(tmp_path))
    assert metrics.test_accuracy > 0.3  # 10 synthetic classes: chance is 0.1
    assert metrics.replicas == 1 and not metrics.diverged
    for name in ("config.json", "metrics.csv", "final_metrics.json", "final.keras",
                 "checkpoints/best.keras", "backup/epoch-0002/model.weights.h5"):
        assert os.path.exists(tmp_path / name), name
    rows = _csv(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2] and [int(r["step"]) for r in rows] == [16, 32]
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["bn"] == "custom"
    with open(tmp_path / "final_metrics.json") as f:
        assert json.load(f)["test_accuracy"] == metrics.test_accuracy
    best = keras.models.load_model(tmp_path / "checkpoints" / "best.keras")
    assert any(isinstance(layer, BatchNormalization) for layer in best.layers)


@pytest.mark.parametrize("overrides", [
    dict(synthetic_examples=512, log_every_n_steps=2),  # 16 steps per epoch, 2 per call
    dict(synthetic_examples=300, log_every_n_steps=7, steps_per_execution=3),  # 10 steps
])
@pytest.mark.slow
def test_tensorboard_has_one_point_per_epoch_equal_to_metrics_csv(tmp_path, overrides):
    training.run(_config(tmp_path, epochs=3, **overrides))
    rows = _csv(tmp_path)
    steps = [int(r["step"]) for r in rows]
    tb = tmp_path / "tensorboard"
    for run, prefix, tags in (("train", "", ("loss", "accuracy", "learning_rate",
                                             "images_per_second")),
                              ("validation", "val_", ("loss", "accuracy"))):
        values = read_scalars(str(tb / run), "epoch_")
        for tag in tags:
            assert [s for s, _ in values[tag]] == steps, (run, tag)
            np.testing.assert_array_equal(
                np.float32([v for _, v in values[tag]]),
                np.float32([float(r[prefix + tag]) for r in rows]), err_msg=f"{run}/{tag}")
    # The BN diagnostics share the x-axis: step 0, then every epoch's end.
    norms = read_scalars(str(tb / "bn_diagnostics"), "grad_norm/")
    assert [s for s, _ in norms["conv1"]] == [0, *steps]
    batch_steps = [s for s, _ in read_scalars(str(tb / "train"), "batch_")["loss"]]
    assert batch_steps == sorted(set(batch_steps)) and batch_steps[-1] <= steps[-1]


@pytest.mark.slow
def test_bn_diagnostics_hold_every_layer(tmp_path):
    training.run(_config(tmp_path))
    diag = set(_events(tmp_path / "tensorboard" / "bn_diagnostics"))
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        assert {f"grad_norm/{layer}", f"preactivation_mean/{layer}_relu",
                f"preactivation_std/{layer}_relu", f"preactivation/{layer}_relu"} <= diag
        for weight in ("gamma", "beta", "moving_mean", "moving_variance"):
            assert f"bn/{layer}_bn/{weight}" in diag
    norms = read_scalars(str(tmp_path / "tensorboard" / "bn_diagnostics"),
                                     "grad_norm/")
    assert set(norms) == {"conv1", "conv2", "fc1", "fc2", "logits"} | {
        f"{layer}_bn" for layer in ("conv1", "conv2", "fc1", "fc2")}
    assert [step for step, _ in norms["conv1"]] == [0, 16, 32]
    assert all(np.isfinite(v) and v > 0 for _, v in norms["conv1"])


@pytest.mark.slow
def test_diagnostics_every_n_steps_with_chunks_that_do_not_divide_the_epoch(tmp_path):
    # 10 steps per epoch, reported every 4 (steps_per_execution): writes at the start, on
    # passing each multiple of 4, and at each epoch's end, each step once.
    training.run(_config(tmp_path, synthetic_examples=320, steps_per_execution=4,
                         diagnostics_every_n_steps=4))
    norms = read_scalars(str(tmp_path / "tensorboard" / "bn_diagnostics"),
                                     "grad_norm/")
    assert [step for step, _ in norms["conv1"]] == [0, 4, 8, 10, 14, 18, 20]


@pytest.mark.slow
def test_diagnostics_never_change_training(tmp_path, monkeypatch):
    probed = training.run(_config(tmp_path / "probed", diagnostics_every_n_steps=1))
    monkeypatch.setattr(callbacks.BNDiagnostics, "write", lambda self, step: None)
    plain = training.run(_config(tmp_path / "plain", diagnostics_every_n_steps=1))
    assert _results(tmp_path / "probed") == _results(tmp_path / "plain")
    assert probed.test_loss == plain.test_loss
    assert not os.path.exists(tmp_path / "plain" / "tensorboard" / "bn_diagnostics")


@pytest.mark.slow
def test_same_seed_gives_identical_runs(tmp_path):
    first = training.run(_config(tmp_path / "a", seed=3))
    second = training.run(_config(tmp_path / "b", seed=3))
    assert first.test_loss == second.test_loss
    assert _results(tmp_path / "a") == _results(tmp_path / "b")


def _assert_no_step_twice(logdir):
    for run in ("train", "validation", "bn_diagnostics"):
        for tag, steps in _events(logdir / run).items():
            assert steps == sorted(set(steps)), (run, tag, steps)


@pytest.mark.slow
def test_interrupted_runs_resume_to_the_uninterrupted_result(tmp_path, monkeypatch,
                                                             stop_at):
    """Stopped mid-epoch, or killed while committing an epoch, a run resumed with the
    same config ends with the same per-epoch metrics and test figures, to the last digit."""
    reference = training.run(_config(tmp_path / "ref", epochs=3))

    # Stopped in the middle of the third epoch (index 2): two epochs are kept.
    mid = _config(tmp_path / "mid", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        training.run(mid, extra_callbacks=[stop_at(2, 5)])
    assert [int(r["epoch"]) for r in _csv(tmp_path / "mid")] == [1, 2]
    resumed = training.run(mid)
    assert resumed.epochs_run_this_session == 1
    assert _results(tmp_path / "mid") == _results(tmp_path / "ref")
    _assert_no_step_twice(tmp_path / "mid" / "tensorboard")

    # Killed during the write of epoch 2's state: the weights are written, the rename
    # that commits them never happens, so epoch 1's state is the latest.
    original = workdir.Workdir.commit

    def dies_after_weights(self, model, state):
        if state["epoch"] == 2:
            os.makedirs(os.path.join(self.backup, ".tmp-0002-1"))
            model.save_weights(os.path.join(self.backup, ".tmp-0002-1", "model.weights.h5"))
            raise KeyboardInterrupt
        original(self, model, state)

    killed = _config(tmp_path / "killed", epochs=3)
    monkeypatch.setattr(workdir.Workdir, "commit", dies_after_weights)
    with pytest.raises(KeyboardInterrupt):
        training.run(killed)
    monkeypatch.setattr(workdir.Workdir, "commit", original)
    assert workdir.Workdir(killed.workdir).latest().epoch == 1
    resumed = training.run(killed)
    assert resumed.epochs_run_this_session == 2
    assert _results(tmp_path / "killed") == _results(tmp_path / "ref")
    assert resumed.test_loss == reference.test_loss
    assert not any(n.startswith(".tmp") for n in os.listdir(tmp_path / "killed" / "backup"))
    _assert_no_step_twice(tmp_path / "killed" / "tensorboard")


@pytest.mark.slow
def test_raising_epochs_continues_a_finished_constant_lr_run(tmp_path):
    training.run(_config(tmp_path / "ref", epochs=3))
    training.run(_config(tmp_path / "more", epochs=2))
    continued = training.run(_config(tmp_path / "more", epochs=3))
    assert continued.epochs_run_this_session == 1
    assert _results(tmp_path / "more") == _results(tmp_path / "ref")
    _assert_no_step_twice(tmp_path / "more" / "tensorboard")


@pytest.mark.slow
def test_workdir_guards(tmp_path):
    training.run(_config(tmp_path, epochs=1))
    with pytest.raises(FileExistsError, match="already holds a finished run of 1 epochs"):
        training.run(_config(tmp_path, epochs=1))
    with pytest.raises(ValueError, match=r"other settings \(learning_rate: 0.001 -> 0.5\)"):
        training.run(_config(tmp_path, epochs=2, learning_rate=0.5))
    with pytest.raises(ValueError, match="lr_schedule='cosine' is shaped by the number of epochs"):
        cosine = tmp_path / "cosine"
        training.run(_config(cosine, epochs=1, lr_schedule="cosine"))
        training.run(_config(cosine, epochs=2, lr_schedule="cosine"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="is a file, not a directory"):
        training.run(_config(a_file))


@pytest.mark.slow
def test_a_bad_config_writes_nothing(tmp_path):
    config = _config(tmp_path / "run", virtual_batch_size=7)
    with pytest.raises(ValueError, match="virtual_batch_size=7 does not divide the batch size "
                                         "per replica 32"):
        training.run(config)
    assert not os.path.exists(tmp_path / "run")
    # The corrected command then runs in the same workdir.
    assert training.run(_config(tmp_path / "run", virtual_batch_size=8, epochs=1)).epochs == 1


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tmp_path, mirrored_strategy):
    metrics = training.run(_config(tmp_path, batch_size=16), strategy_override=mirrored_strategy)
    assert metrics.replicas == 2 and metrics.global_batch_size == 32
    assert metrics.test_accuracy > 0.3
    model = keras.models.load_model(tmp_path / "final.keras")
    norms = [layer for layer in model.layers if isinstance(layer, BatchNormalization)]
    assert norms and all(layer.synchronized for layer in norms)


@pytest.mark.slow
def test_ghost_bn_trains_on_partial_batches_and_per_replica(tmp_path, mirrored_strategy):
    # 300 examples: 9 batches of 32 and one of 12 (groups 8 + 4); a 64-image probe.
    metrics = training.run(_config(tmp_path / "one", synthetic_examples=300, batch_size=32,
                                   virtual_batch_size=8, epochs=1))
    assert np.isfinite(metrics.test_loss)
    two = training.run(_config(tmp_path / "two", synthetic_examples=300, batch_size=16,
                               virtual_batch_size=8, epochs=1), strategy_override=mirrored_strategy)
    assert two.replicas == 2 and np.isfinite(two.test_loss)
    model = keras.models.load_model(tmp_path / "two" / "final.keras")
    # Ghost batches are per replica by nature: no cross-replica synchronization.
    assert not any(getattr(layer, "synchronized", False) for layer in model.layers)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    dict(bn="none", optimizer="sgd", lr_schedule="cosine", nesterov=True, weight_decay=5e-3),
    dict(bn="keras", lr_schedule="warmup_cosine", augment=True, label_smoothing=0.1),
    dict(bn="custom", virtual_batch_size=8, mixed_precision="mixed_float16"),
    dict(model="conv1d_example", bn="custom", batch_size=16, synthetic_examples=64),
])
def test_variants_train(tmp_path, overrides):
    """Every option trains end to end; what each one does is checked in the tests below."""
    metrics = training.run(_config(tmp_path, epochs=1, **overrides))
    assert np.isfinite(metrics.test_loss) and metrics.test_accuracy > 0.1


def test_augmentation_changes_the_training_batches():
    plain = training.make_datasets(_config("x", synthetic_examples=64)).train.epoch(0)
    augmented = training.make_datasets(_config("x", synthetic_examples=64, augment=True))
    (x, y), (x_aug, y_aug) = next(iter(plain)), next(iter(augmented.train.epoch(0)))
    np.testing.assert_array_equal(y, y_aug)  # the same examples, in the same order
    assert x.shape == x_aug.shape and not np.allclose(x, x_aug)
    # Evaluation is never augmented.
    np.testing.assert_array_equal(next(iter(augmented.test))[0],
                                  next(iter(training.make_datasets(
                                      _config("x", synthetic_examples=64)).test))[0])


def test_mixed_float16_computes_in_float16_and_keeps_bn_in_float32():
    config = _config("x", mixed_precision="mixed_float16")
    with training.dtype_policy(config.mixed_precision):
        model = training.build_compiled_model(config, num_replicas=1, steps_per_epoch=1)
    assert keras.config.dtype_policy().name == "float32"  # restored afterwards
    x = np.zeros((2, 32, 32, 3), np.float32)
    probe = keras.Model(model.input, [model.get_layer("conv1").output,
                                      model.get_layer("conv1_bn").output])
    conv, bn = probe(x, training=True)
    assert conv.dtype == "float16" and bn.dtype == "float16"
    bn_layer = model.get_layer("conv1_bn")
    assert {v.dtype for v in bn_layer.weights} == {"float32"}
    assert model.get_layer("conv1").kernel.dtype == "float32"


def test_ghost_bn_reaches_every_bn_layer_and_normalizes_each_group_alone():
    config = _config("x", virtual_batch_size=8, batch_size=16)
    model = training.build_compiled_model(config, num_replicas=1, steps_per_epoch=1)
    norms = [layer for layer in model.layers if isinstance(layer, BatchNormalization)]
    assert len(norms) == 4 and all(layer.virtual_batch_size == 8 for layer in norms)
    # Two groups of 8 with different offsets: each comes out with its own mean near 0.
    x = np.concatenate([np.full((8, 120), 5.0), np.full((8, 120), -3.0)]).astype(np.float32)
    x += np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    y = keras.ops.convert_to_numpy(model.get_layer("fc1_bn")(x, training=True))
    np.testing.assert_allclose(y[:8].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y[8:].mean(0), 0.0, atol=1e-5)


@pytest.mark.slow
def test_divergence_is_reported_not_hidden(tmp_path):
    metrics = training.run(_config(tmp_path, epochs=2, bn="none", optimizer="sgd",
                                   learning_rate=1e8))
    assert metrics.diverged and metrics.diverged_at_epoch == 0


@pytest.mark.real_data
@pytest.mark.slow
def test_lenet_with_our_bn_learns_real_cifar10_in_one_epoch(tmp_path, cifar10_dir):
    metrics = training.run(TrainConfig(
        model="lenet", bn="custom", dataset="cifar10", data_dir=cifar10_dir, download=False,
        epochs=1, batch_size=128, workdir=str(tmp_path), verbose=0))
    assert metrics.test_accuracy > 0.35
