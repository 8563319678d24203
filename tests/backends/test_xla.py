"""Our layer under XLA (tf.function(jit_compile=True), Keras' jit_compile, TPUs): the proof's
grid, Ghost BN, every model and BN mode through training.run, and repeatable results."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from bn_keras import backends
from bn_keras.backends import tensorflow as tf_backend
from bn_keras.data import pipelines
from bn_keras.errors import InvalidSetting
from bn_keras.layers import BatchNormalization
from bn_keras.testing import equivalence, layer_steps
from bn_keras.train import training
from bn_keras.train.config import TrainConfig

GRID = equivalence.default_grid()


@pytest.mark.parametrize("case", GRID, ids=[c.name for c in GRID])
def test_the_grid_passes_compiled_by_xla_with_an_unknown_batch_size(case):
    result = equivalence.compare(case, xla=True)
    assert result["passed"], result


def test_under_xla_the_rows_kernel_is_chosen_whatever_the_size():
    chosen = []

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, 28, 28, 16])])
    def kernel_of(x):
        chosen.append(backends.current().kernel(x, 3, 1e-3, True))
        return x

    kernel_of(tf.zeros([256, 28, 28, 16]))  # 3.2 million elements: fused outside XLA
    assert chosen == [tf_backend.ROWS]


@pytest.mark.parametrize("batch,group_size,masked", [(14, 4, False), (7, 4, True)])
def test_ghost_bn_with_a_short_last_group_under_xla(batch, group_size, masked):
    rng = np.random.default_rng(batch)
    x = (rng.normal(size=(batch, 5, 7)) * 3 + 1).astype(np.float32)
    mask = rng.random((batch, 5)) < 0.7 if masked else None
    layer = BatchNormalization(virtual_batch_size=group_size, momentum=0.5)
    layer.build(x.shape)
    y, _ = layer_steps.train_step(layer, mask, xla=True)(x, np.ones_like(x))
    expected, moving_mean, moving_variance = equivalence.numpy_ghost_batch_norm(
        x, group_size, 0.5, mask)
    if mask is not None:  # masked-out positions are normalized too; compare the counted ones
        y, expected = np.asarray(y)[mask], expected[mask]
    np.testing.assert_allclose(y, expected, atol=2e-5)
    np.testing.assert_allclose(layer.moving_mean, moving_mean, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance, moving_variance, atol=1e-5)


def _config(workdir, **overrides):
    values = dict(dataset="synthetic", synthetic_examples=128, batch_size=16, epochs=1,
                  bn_momentum=0.9, workdir=str(workdir), verbose=0, probe_size=32,
                  jit_compile=True)
    return TrainConfig(**{**values, **overrides})


class RecordsJit(keras.callbacks.Callback):
    """What Keras decided: model.jit_compile after compile (it turns XLA off silently)."""

    def on_train_begin(self, logs=None):
        self.jit_compile = self.model.jit_compile


@pytest.mark.slow
@pytest.mark.proof  # a grid of models and BN modes, each compiled by XLA
@pytest.mark.parametrize("overrides", [
    dict(model="lenet", bn="custom"), dict(model="lenet", bn="keras"),
    dict(model="lenet", bn="none"), dict(model="resnet20", bn="custom", batch_size=8),
    dict(model="conv1d_example", bn="custom"), dict(model="lenet_tutorial", bn="keras"),
    dict(model="lenet", bn="custom", virtual_batch_size=4),
    dict(model="lenet", bn="custom", renorm=True),
    dict(model="lenet", bn="custom", mixed_precision="mixed_float16"),
], ids=lambda o: "-".join(f"{v}" for v in o.values()))
def test_every_model_and_bn_mode_trains_with_xla(tmp_path, overrides):
    # 128 images in batches of 16 (8 for ResNet-20): every batch full; with Ghost BN,
    # groups of 4; --deterministic is on (the default).
    recorder = RecordsJit()
    metrics = training.run(_config(tmp_path, **overrides), extra_callbacks=[recorder])
    assert recorder.jit_compile is True  # XLA really ran
    assert np.isfinite(metrics.test_loss)


@pytest.mark.slow
def test_xla_runs_repeat_to_the_last_digit_and_keep_exact_resume(tmp_path, stop_at):
    first = training.run(_config(tmp_path / "a", epochs=2, synthetic_examples=300))
    second = training.run(_config(tmp_path / "b", epochs=2, synthetic_examples=300))
    assert _results(first) == _results(second)
    stopped = _config(tmp_path / "c", epochs=2, synthetic_examples=300)
    with pytest.raises(KeyboardInterrupt):
        training.run(stopped, extra_callbacks=[stop_at(1, 3)])
    resumed = training.run(stopped)
    assert resumed.epochs_run_this_session == 1
    assert _results(resumed) == _results(first)


def _results(metrics):
    """Every number of a run but its timings."""
    history = [{k: v for k, v in row.items() if k not in ("images_per_second", "epoch_seconds")}
               for row in metrics.history]
    return history, metrics.test_loss, metrics.test_accuracy, metrics.loss_curve


@pytest.mark.slow
def test_static_batches_as_on_a_tpu_compile_and_train(tmp_path):
    """TPUs compile everything with XLA, with `drop_remainder` batches of static shape:
    on a CPU, that training step of our layer compiles and trains."""
    config = _config(tmp_path, synthetic_examples=100)
    splits = training.load_splits(config)
    data = pipelines.pipelines(splits, 16, 16, drop_remainder=True)  # 6 batches, 4 dropped
    assert data.train.steps_per_epoch == 6
    recorder = RecordsJit()
    metrics = training.run(config, datasets_override=data, extra_callbacks=[recorder])
    assert recorder.jit_compile is True and np.isfinite(metrics.test_loss)


def test_xla_with_several_mirrored_replicas_is_refused_before_writing(tmp_path,
                                                                      mirrored_strategy):
    with pytest.raises(InvalidSetting, match="jit_compile with 2 replicas: Keras 3.15's fit "
                                             "with XLA fails under MirroredStrategy"):
        training.run(_config(tmp_path / "run"), strategy_override=mirrored_strategy)
    assert not os.path.exists(tmp_path / "run")
