"""bn_keras.layers.recalibration: moving statistics re-estimated for the current weights.

Each check compares against bn_keras.testing.bn_tools.reference_statistics, which
captures every BN layer's input in a training-mode forward and averages its batch
statistics in NumPy, apart from the code under test. JAX and PyTorch run the same
check in tests/backends/backend_probe.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bn_keras.errors import InvalidSetting
from bn_keras.layers import BatchNormalization, recalibrate_batch_norm
from bn_keras.testing import bn_tools

TOLERANCE = 1e-5  # relative to each channel's standard deviation (mean) or variance


def test_every_kind_of_bn_layer_gets_the_statistics_of_its_inputs():
    """Ours and Keras', plain, Ghost (groups by size), renorm, in a nested model, with a
    short last batch; the frozen layer, renorm's own statistics and every weight stay."""
    model = bn_tools.tools_model()
    errors = bn_tools.recalibration_errors(model, bn_tools.batches(3, 16, last=6))
    assert errors.pop("other_weights") == 0.0
    assert errors.pop("frozen_bn") == 0.0
    assert set(errors) == {"conv_bn", "dw_bn", "sep_ghost_bn", "after_relu_conv_bn",
                           "renorm_bn", "dense_bn"}
    assert max(errors.values()) < TOLERANCE, errors


def test_a_sequential_model_with_keras_bn():
    model = keras.Sequential([keras.Input(bn_tools.INPUT_SHAPE), keras.layers.Conv2D(4, 3),
                              keras.layers.BatchNormalization(), keras.layers.ReLU(),
                              keras.layers.Flatten(), keras.layers.Dense(5),
                              keras.layers.BatchNormalization()])
    bn_tools.randomize_batch_norm(model)
    errors = bn_tools.recalibration_errors(model, bn_tools.batches(2, 8))
    assert errors.pop("other_weights") == 0.0
    assert len(errors) == 2 and max(errors.values()) < TOLERANCE, errors


def test_the_statistics_no_longer_lag_behind_the_weights():
    """After training, the moving statistics (momentum 0.99) are not those of the final
    weights; afterwards they are those the final weights give: the mean of the layer's
    input, and the mean of its per-batch variances (the variance BN normalizes with)."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32) * 3 + 2
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
                              BatchNormalization(name="bn")])
    model.compile("sgd", "mse")
    model.fit(x, np.zeros((64, 4)), batch_size=16, epochs=1, verbose=0)
    dense_out = model.layers[0](x).numpy()
    bn = model.get_layer("bn")
    assert np.abs(bn.moving_mean.numpy() - dense_out.mean(0)).max() > 0.1
    recalibrate_batch_norm(model, x, batch_size=16)
    np.testing.assert_allclose(bn.moving_mean.numpy(), dense_out.mean(0), atol=1e-5)
    per_batch = [dense_out[i:i + 16].var(0) for i in range(0, 64, 16)]
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean(per_batch, 0), rtol=1e-5)


def test_optimizer_state_is_unchanged():
    model = bn_tools.tools_model()
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    data = bn_tools.batches(2, 8)
    model.fit(data[0], np.zeros((8, 6)), epochs=1, verbose=0)
    before = [v.numpy().copy() for v in model.optimizer.variables]
    recalibrate_batch_norm(model, data)
    for variable, value in zip(model.optimizer.variables, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_data_as_a_dataset_of_pairs_an_array_or_the_first_n_batches():
    data = bn_tools.batches(4, 8)
    images = np.concatenate(data)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images)))).batch(8)
    results = []
    for source, kwargs in ((dataset, {}), ((images, np.zeros(len(images))), {"batch_size": 8}),
                           (data, {})):
        model = bn_tools.tools_model()
        info = recalibrate_batch_norm(model, source, **kwargs)
        assert (info.batches, info.examples) == (4, 32)
        results.append(model.get_layer("dense_bn").moving_variance.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
    np.testing.assert_allclose(results[0], results[2], rtol=1e-6)
    model = bn_tools.tools_model()
    info = recalibrate_batch_norm(model, dataset, num_batches=2)
    assert (info.batches, info.examples) == (2, 16)
    assert "frozen_bn" not in info.layers and "dense_bn" in info.layers


@pytest.mark.parametrize("data,kwargs,message", [([], {}, "holds no batch"),
                                                 (np.zeros((4, 8, 8, 3)), {"num_batches": 0},
                                                  "at least 1")])
def test_refuses_empty_data_and_no_batches(data, kwargs, message):
    with pytest.raises(InvalidSetting, match=message):
        recalibrate_batch_norm(bn_tools.tools_model(), data, **kwargs)


def test_under_a_strategy_every_layer_sees_all_replicas_data(mirrored_strategy):
    """synchronized or not, ours or Keras': the statistics of the whole batches, on
    every replica's copy of the variables."""
    with mirrored_strategy.scope():
        inputs = keras.Input(bn_tools.INPUT_SHAPE)
        x = keras.layers.Conv2D(4, 3)(inputs)
        x = BatchNormalization(synchronized=True, name="ours_sync")(x)
        x = BatchNormalization(name="ours")(x)
        x = keras.layers.BatchNormalization(synchronized=True, name="keras_sync")(x)
        x = keras.layers.BatchNormalization(name="keras")(x)
        model = keras.Model(inputs, x)
        bn_tools.randomize_batch_norm(model)
    data = bn_tools.batches(3, 16, last=6)
    expected = bn_tools.reference_statistics(model, data)
    recalibrate_batch_norm(model, tf.data.Dataset.from_tensor_slices(np.concatenate(data))
                           .batch(16))
    for name, (mean, variance) in expected.items():
        layer = model.get_layer(name)
        for copy in layer.moving_mean.value.values:
            np.testing.assert_allclose(copy.numpy(), mean, atol=1e-5)
        for copy in layer.moving_variance.value.values:
            np.testing.assert_allclose(copy.numpy(), variance, rtol=1e-5)
