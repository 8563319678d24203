"""bn_keras.train.averaging: weight EMA with BN statistics of its own, in a training run."""

import json

import keras
import numpy as np
import pytest

from bn_keras import keras_compat, saving
from bn_keras.layers import batch_norm_layers
from bn_keras.train import averaging, training
from bn_keras.train.config import TrainConfig


def _config(workdir, **overrides):
    values = dict(dataset="synthetic", synthetic_examples=512, epochs=2, batch_size=32,
                  workdir=str(workdir), verbose=0, log_every_n_steps=2, probe_size=64,
                  ema_momentum=0.9, recalibrate_bn_batches=4)
    values.update(overrides)
    return TrainConfig(**values)


def _ema_model(momentum=0.5):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
                              keras.layers.BatchNormalization(), keras.layers.Dense(3)])
    optimizer = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=momentum)
    keras_compat.keep_averages_apart(optimizer)
    model.compile(optimizer, "mse")
    return model


def _fit(model, epochs=1):
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(32, 6)), rng.normal(size=(32, 3)), batch_size=8, epochs=epochs,
              verbose=0)


def test_fit_leaves_the_trained_weights_in_the_model():
    """Keras overwrites the weights with their averages at the end of every fit; with the
    averages kept apart, the model holds the trained weights, the optimizer the averages."""
    model = _ema_model()
    _fit(model)
    pairs = keras_compat.optimizer_averages(model.optimizer)
    assert len(pairs) == len(model.trainable_variables)
    assert all(not np.array_equal(v.numpy(), a.numpy()) for v, a in pairs)
    plain = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    plain.compile(keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5), "mse")
    _fit(plain)  # Keras' own behaviour, for contrast
    assert all(np.array_equal(v.numpy(), a.numpy())
               for v, a in keras_compat.optimizer_averages(plain.optimizer))


def test_evaluated_weights_swap_in_and_back_exactly():
    model = _ema_model()
    _fit(model, epochs=2)
    before = [v.numpy().copy() for v in model.weights]
    data = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)
    evaluated = averaging.EvaluatedWeights(model, use_average=True, batches=2,
                                           data=lambda: [data[:8], data[8:]])
    with evaluated.swapped_in():
        for variable, average in keras_compat.optimizer_averages(model.optimizer):
            np.testing.assert_array_equal(variable.numpy(), average.numpy())
        bn = batch_norm_layers(model)[0]
        hidden = model.layers[0](data).numpy()
        np.testing.assert_allclose(bn.moving_mean.numpy(), hidden.mean(0), atol=1e-5)
    for variable, value in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


@pytest.mark.slow
def test_a_run_evaluates_and_keeps_the_averages_with_their_own_statistics(tmp_path):
    metrics = training.run(_config(tmp_path))
    assert metrics.evaluated_weights == "averaged"
    assert metrics.bn_statistics == "re-estimated"
    assert metrics.recalibration == (4, 128)  # batches, examples
    variants = metrics.test_variants
    assert set(variants) == {"trained_weights_moving_statistics", "trained_weights_re_estimated",
                             "averaged_weights_trained_statistics", "averaged_weights_re_estimated"}
    assert variants["averaged_weights_re_estimated"].test_loss == metrics.test_loss
    # The final model holds the averages; the last commit the trained weights (to resume).
    final = saving.load_model(str(tmp_path / "final.keras"))
    averages = {id(v): a for v, a in keras_compat.optimizer_averages(final.optimizer)}
    for variable in final.trainable_variables:
        np.testing.assert_array_equal(variable.numpy(), averages[id(variable)].numpy())
    committed = training.build_compiled_model(_config(tmp_path), 1, 16)
    committed.optimizer.build(committed.trainable_variables)
    committed.load_weights(str(tmp_path / "backup" / "epoch-0002" / "model.weights.h5"))
    kernel = lambda m: m.get_layer("conv1").kernel.numpy()  # noqa: E731
    assert not np.array_equal(kernel(committed), kernel(final))
    # The best checkpoint was saved with the averages in.
    best = saving.load_model(str(tmp_path / "checkpoints" / "best.keras"))
    assert any(np.array_equal(kernel(best), a.numpy())
               for a in [a for _, a in keras_compat.optimizer_averages(best.optimizer)])


@pytest.mark.slow
def test_recalibration_alone_keeps_the_trained_weights(tmp_path):
    metrics = training.run(_config(tmp_path, ema_momentum=None, epochs=1))
    assert (metrics.evaluated_weights, metrics.bn_statistics) == ("trained", "re-estimated")
    assert set(metrics.test_variants) == {"trained_weights_moving_statistics",
                                             "trained_weights_re_estimated"}
    assert (metrics.test_variants["trained_weights_re_estimated"].test_accuracy
            == metrics.test_accuracy)


@pytest.mark.slow
def test_interrupted_ema_run_resumes_to_the_uninterrupted_result(tmp_path, stop_at):
    reference = training.run(_config(tmp_path / "ref", epochs=3))
    with pytest.raises(KeyboardInterrupt):
        training.run(_config(tmp_path / "mid", epochs=3), extra_callbacks=[stop_at(2, 5)])
    resumed = training.run(_config(tmp_path / "mid", epochs=3))
    assert resumed.epochs_run_this_session == 1
    for key in ("test_loss", "test_accuracy", "test_variants"):
        assert getattr(resumed, key) == getattr(reference, key), key
    assert ([row["val_loss"] for row in resumed.history]
            == [row["val_loss"] for row in reference.history])


@pytest.mark.slow
def test_ema_and_recalibration_under_a_mirrored_strategy(tmp_path, mirrored_strategy):
    metrics = training.run(_config(tmp_path, batch_size=16), strategy_override=mirrored_strategy)
    assert metrics.replicas == 2 and metrics.recalibration.examples == 128
    assert np.isfinite(metrics.test_loss)
    with open(tmp_path / "final_metrics.json") as f:
        assert json.load(f)["evaluated_weights"] == "averaged"


def test_ema_momentum_and_recalibration_are_checked():
    from bn_keras.errors import InvalidSetting

    for bad, message in ((dict(ema_momentum=1.0), "ema_momentum must be a number in \\(0, 1\\)"),
                         (dict(ema_momentum=0.0), "ema_momentum must be"),
                         (dict(recalibrate_bn_batches=-1), "recalibrate_bn_batches must be"),
                         (dict(bn="none", recalibrate_bn_batches=5), "needs BN")):
        with pytest.raises(InvalidSetting, match=message):
            _config("w", **bad).validate()
    assert _config("w", recalibrate_bn_batches=None).resolved_recalibration_batches() == 100
    no_bn = _config("w", recalibrate_bn_batches=None, bn="none")
    assert no_bn.resolved_recalibration_batches() == 0
    assert _config("w", recalibrate_bn_batches=None,
                   ema_momentum=None).resolved_recalibration_batches() == 0
