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
from bn_keras.layers import BatchNormalization, batch_norm_layers, recalibrate_batch_norm
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


def _statistics(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.non_trainable_weights]


def _same(before, after):
    return all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def _failing_after(count, error):
    """Batches of images that raise `error` once `count` have been taken."""
    def batches():
        yield from bn_tools.batches(count, 16)
        raise error
    return batches()


@pytest.mark.parametrize("error", [RuntimeError("the disk went away"), KeyboardInterrupt()])
def test_a_failure_half_way_leaves_the_model_exactly_as_it_was(error):
    """A dataset that raises after two batches, or Ctrl-C in a notebook: every statistic,
    momentum and renorm value as it was (the first pass had zeroed the statistics)."""
    model = bn_tools.tools_model()
    before = _statistics(model)
    momenta = [layer.momentum for layer in batch_norm_layers(model)]
    with pytest.raises(type(error)):
        recalibrate_batch_norm(model, _failing_after(2, error))
    assert _same(before, _statistics(model))
    assert momenta == [layer.momentum for layer in batch_norm_layers(model)]


def test_a_dict_of_arrays_and_a_pair_tuple_are_taken_as_fit_takes_them():
    inputs = keras.Input((6,), name="features")
    model = keras.Model({"features": inputs},
                        BatchNormalization(name="bn")(keras.layers.Dense(4)(inputs)))
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    info = recalibrate_batch_norm(model, {"features": x}, batch_size=16)
    assert (info.batches, info.examples) == (3, 40)
    by_dict = keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean).copy()
    info = recalibrate_batch_norm(model, ({"features": x}, np.zeros(40)), batch_size=16)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean),
                                  by_dict)


def test_an_x_y_list_is_refused_before_anything_changes():
    model = bn_tools.tools_model()
    before = _statistics(model)
    x = bn_tools.batches(1, 16)[0]
    with pytest.raises(InvalidSetting, match="list of arrays of different shapes"):
        recalibrate_batch_norm(model, [x, np.zeros(16)])
    assert _same(before, _statistics(model))


@pytest.mark.parametrize("data,kwargs,message", [
    (None, {}, "data=None holds no images"),
    ("images/", {}, "holds no images"),
    (np.zeros((4, 8, 8, 3)), {"num_batches": 2.5}, r"num_batches=2.5 must be a whole number"),
    (np.zeros((4, 8, 8, 3)), {"num_batches": True}, "num_batches=True"),
    (np.zeros((4, 8, 8, 3)), {"batch_size": 0}, "batch_size=0"),
    (np.zeros((4, 8, 8, 3)), {"variance": "unbiased"}, "variance='unbiased' is not one of"),
])
def test_bad_arguments_are_one_line(data, kwargs, message):
    with pytest.raises(InvalidSetting, match=message):
        recalibrate_batch_norm(bn_tools.tools_model(), data, **kwargs)


def test_a_batch_of_one_through_dense_is_refused_naming_the_layer():
    """Dense -> BN on one example: one value per channel, variance 0 (PyTorch raises)."""
    model = bn_tools.tools_model()
    before = _statistics(model)
    data = bn_tools.batches(2, 16, last=1)
    with pytest.raises(InvalidSetting, match="dense_bn sees one value per channel in batch 2"):
        recalibrate_batch_norm(model, data)
    assert _same(before, _statistics(model))


def test_a_shared_bn_and_one_never_trained_keep_their_statistics_and_say_why():
    inputs = keras.Input((7,))
    shared = BatchNormalization(name="shared")
    y = keras.layers.Concatenate()([shared(keras.layers.Dense(5)(inputs)),
                                    shared(keras.layers.Dense(5)(inputs))])
    y = BatchNormalization(name="used")(y)
    idle = BatchNormalization(name="idle")  # built, never called: the tutorial's mistake
    idle.build((None, 10))
    model = keras.Model(inputs, y)
    model.idle = idle
    bn_tools.randomize_batch_norm(model)
    before = {layer.name: _statistics(layer) for layer in batch_norm_layers(model)}
    x = np.random.default_rng(0).normal(size=(32, 7)).astype(np.float32)
    info = recalibrate_batch_norm(model, x, batch_size=16)
    assert info.layers == ("used",)
    assert set(info.kept) == {"shared", "idle"}
    assert "calls it 2 times" in info.kept["shared"]
    assert "never calls it in training mode" in info.kept["idle"]
    for name in ("shared", "idle"):
        assert _same(before[name], _statistics(model.get_layer(name) if name == "shared"
                                               else idle))
    assert not _same(before["used"], _statistics(model.get_layer("used")))


def test_a_model_without_bn_reads_no_batch():
    def never():
        raise AssertionError("a batch was read")
        yield
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert recalibrate_batch_norm(model, never()).batches == 0


def test_a_string_is_refused_as_a_model():
    with pytest.raises(TypeError, match="expected a Keras model"):
        recalibrate_batch_norm("x", np.zeros((4, 3)))


@pytest.mark.parametrize("variance", ["batch", "population"])
def test_both_conventions_against_numpy_with_a_short_last_batch(variance):
    model = bn_tools.tools_model()
    data = bn_tools.batches(3, 16, last=6)
    expected = bn_tools.reference_statistics(model, data, variance)
    info = recalibrate_batch_norm(model, data, variance=variance)
    assert info.variance == variance
    for name, (mean, var) in expected.items():
        layer = next(layer for layer in batch_norm_layers(model) if layer.name == name)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), mean,
                                   atol=1e-5 * np.sqrt(var).max())
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance), var,
                                   rtol=1e-5)


def test_population_adds_the_spread_of_the_batch_means():
    """Dense -> BN on i.i.d. data in batches of 4: "batch" is about (1 - 1/4) of the
    population variance; "population" is the variance of all the values."""
    inputs = keras.Input((1,))
    model = keras.Model(inputs, BatchNormalization(name="bn")(inputs))
    x = np.random.default_rng(0).normal(size=(4000, 1)).astype(np.float32) * 3
    variances = {}
    for variance in ("batch", "population"):
        recalibrate_batch_norm(model, x, batch_size=4, variance=variance)
        variances[variance] = float(keras.ops.convert_to_numpy(
            model.get_layer("bn").moving_variance)[0])
    assert variances["population"] == pytest.approx(x.var(), rel=1e-5)
    assert variances["batch"] / variances["population"] == pytest.approx(0.75, abs=0.03)
