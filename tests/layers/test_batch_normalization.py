"""bn_keras.layers.batch_normalization: our layer against Keras' built-in and NumPy."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from bn_keras.layers import BatchNormalization
from bn_keras.testing import equivalence

GRID = equivalence.default_grid()


@pytest.mark.parametrize("case", GRID, ids=[c.name for c in GRID])
def test_equals_builtin(case):
    result = equivalence.compare(case)
    assert result["config_roundtrip"], result
    failures = {}
    for quantity in equivalence.QUANTITIES:
        diff = result[quantity]
        if diff is None or diff <= case.tolerance:
            continue
        # Only ill-conditioned inputs may differ more, and then ours must be
        # no less accurate than Keras' against the float64 reference.
        assert result["ours_vs_exact"] is not None, (quantity, result)
        failures[quantity] = diff
    if failures:
        assert (result["ours_vs_exact"]
                <= equivalence.ROUNDING_ALLOWANCE * result["keras_vs_exact"]), (failures, result)
    if result["infer_vs_own_statistics"] is not None:  # inference adds no error of its own
        assert result["infer_vs_own_statistics"] <= case.tolerance, result
    assert result["passed"], result


def test_grid_covers_every_shape_axis_batch_size_and_conditioning():
    """The proof's grid holds, for 2-D, 3-D and 4-D inputs, batches of 1, 2 and many,
    both feature axes, ill-conditioned inputs, every precision, masks and every option."""
    by_rank = {rank: [c for c in GRID if len(c.shape) == rank] for rank in (2, 3, 4)}
    for rank, cases in by_rank.items():
        sizes = {c.shape[0] for c in cases if c.policy == "float32" and not c.layer_kwargs}
        assert {1, 2} <= sizes and max(sizes) >= 32, (rank, sizes)
    for rank in (3, 4):
        assert any(c.axis == 1 for c in by_rank[rank]), rank  # channels first
    for rank in (2, 4):
        assert any(c.magnitude >= 1e4 for c in by_rank[rank]), rank
        assert any(c.constant for c in by_rank[rank]), rank
        assert any(c.converged and c.magnitude >= 1e4 for c in by_rank[rank]), rank
    assert {c.policy for c in GRID} == set(equivalence.TOLERANCES)
    assert any(c.masked for c in GRID)
    options = {key for c in GRID for key, _ in c.layer_kwargs}
    assert options >= {"synchronized", "center", "scale", "momentum", "epsilon", "renorm",
                       "renorm_clipping"}


@pytest.mark.parametrize("shape,axis", [((64, 10), -1), ((8, 30, 12), -1), ((8, 12, 30), 1),
                                        ((4, 9, 9, 20), -1), ((4, 9, 9, 3), -1),
                                        ((4, 5, 6, 7), 1), ((256, 10, 10, 16), -1)])
def test_training_output_matches_numpy_formulas(shape, axis):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 2 + 3).astype(np.float32)
    layer = BatchNormalization(axis=axis, momentum=0.9)
    layer.build(shape)
    channels = shape[axis]
    gamma = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    beta = rng.normal(size=channels).astype(np.float32)
    layer.set_weights([gamma, beta, np.zeros(channels, np.float32), np.ones(channels, np.float32)])
    y = layer(tf.constant(x), training=True).numpy()
    expected, mu, sigma2 = equivalence.numpy_batch_norm(x, gamma, beta, axis, layer.epsilon)
    # The proof's criterion (scaled by max(1, max|expected|)): the fused kernel's float32
    # rounding depends on TensorFlow's threads (at 256x10x10x16: 7.3e-6 with the default,
    # 2.1e-5 with one thread, which an earlier test in the process may have set).
    assert equivalence.scaled_difference(y, expected) <= equivalence.TOLERANCES["float32"]
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mu, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * sigma2, atol=1e-5)
    # Inference normalizes with the moving statistics.
    y_inf = layer(tf.constant(x), training=False).numpy()
    shape_c = [1] * len(shape)
    shape_c[axis] = -1
    expected_inf = ((x - layer.moving_mean.numpy().reshape(shape_c))
                    / np.sqrt(layer.moving_variance.numpy().reshape(shape_c) + layer.epsilon)
                    * gamma.reshape(shape_c) + beta.reshape(shape_c))
    np.testing.assert_allclose(y_inf, expected_inf, atol=1e-5)


def _twin_models(shape, batch=None):
    """The same small functional model with Keras' BN and with ours, sharing weights."""
    def build(bn_cls):
        inputs = keras.Input(shape=shape[1:], batch_size=batch)
        x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inputs)
        x = bn_cls(name="bn")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(3, name="dense")(x)
        return keras.Model(inputs, outputs)

    keras.utils.set_random_seed(1)
    theirs = build(keras.layers.BatchNormalization)
    ours = build(BatchNormalization)
    ours.set_weights(theirs.get_weights())
    return theirs, ours


@pytest.mark.slow
@pytest.mark.parametrize("batch_size,static_batch", [(32, None), (32, 32), (4, None), (4, 4)])
def test_fit_in_tf_function_matches_builtin(batch_size, static_batch):
    """Training with fit(): the traced graph (fused, row or tf.cond path) gives Keras' weights."""
    shape = (batch_size * 4, 28, 28, 3)  # 28*28*16*32 elements: above the fused threshold
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    y = rng.integers(0, 3, size=shape[0])
    results = []
    for model in _twin_models(shape, static_batch):
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
        results.append((model.get_weights(), model.predict(x, verbose=0, batch_size=batch_size)))
    (w_theirs, p_theirs), (w_ours, p_ours) = results
    for a, b in zip(w_theirs, w_ours, strict=True):
        np.testing.assert_allclose(b, a, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(p_ours, p_theirs, atol=2e-4)


def test_weights_are_interchangeable_both_ways():
    theirs = keras.layers.BatchNormalization(renorm=True)
    ours = BatchNormalization(renorm=True)
    theirs.build((4, 6))
    ours.build((4, 6))
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
    assert [w.trainable for w in ours.weights] == [w.trainable for w in theirs.weights]
    values = [np.random.default_rng(i).uniform(0.5, 1.5, 6).astype(np.float32)
              for i in range(len(theirs.weights))]
    ours.set_weights(values)
    theirs.set_weights(ours.get_weights())
    for a, b in zip(theirs.get_weights(), values, strict=True):
        np.testing.assert_array_equal(a, b)


def test_config_mirrors_builtin_and_round_trips():
    kwargs = dict(axis=1, momentum=0.9, epsilon=1e-4, center=False,
                  gamma_initializer="random_normal", beta_regularizer="l2", renorm=True,
                  renorm_clipping={"rmax": 2.0}, renorm_momentum=0.95, synchronized=True)
    ours = BatchNormalization(**kwargs, virtual_batch_size=None)
    theirs = keras.layers.BatchNormalization(**kwargs)
    config = ours.get_config()
    for key, value in theirs.get_config().items():
        if key != "name":
            assert config[key] == value, key
    assert BatchNormalization.from_config(config).get_config() == config
    assert config["virtual_batch_size"] is None


def test_model_saves_and_loads_without_custom_objects(tmp_path):
    _, model = _twin_models((4, 8, 8, 3))
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)
    model(x, training=True)  # move the statistics away from their initial values
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("bn"), BatchNormalization)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_trainable_false_means_inference_mode():
    layer = BatchNormalization()
    x = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, size=(16, 5)).astype(np.float32))
    layer.build(x.shape)
    layer.trainable = False
    y = layer(x, training=True)
    np.testing.assert_allclose(y.numpy(), layer(x, training=False).numpy())
    np.testing.assert_array_equal(layer.moving_mean.numpy(), np.zeros(5))


def test_mixed_float16_keeps_float32_weights_and_returns_float16():
    layer = BatchNormalization(dtype="mixed_float16")
    x = tf.constant(np.random.default_rng(0).normal(size=(8, 6, 6, 32)).astype(np.float32))
    y = layer(x, training=True)
    assert y.dtype == tf.float16
    assert all(w.dtype == "float32" for w in layer.weights)
    expected, _, _ = equivalence.numpy_batch_norm(x.numpy(), np.ones(32), np.zeros(32))
    np.testing.assert_allclose(y.numpy().astype(np.float64), expected, atol=1e-2)


@pytest.mark.parametrize("batch,group_size", [(12, 4), (14, 4), (7, 4), (3, 4), (256, 7)])
def test_ghost_batch_normalizes_each_group_alone(batch, group_size):
    """Whole groups and, where the group size does not divide the batch, one smaller group."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(batch, 5, 7)) * 3 + 1).astype(np.float32)
    layer = BatchNormalization(virtual_batch_size=group_size, momentum=0.5)
    y = layer(tf.constant(x), training=True).numpy()
    expected, moving_mean, moving_variance = equivalence.numpy_ghost_batch_norm(x, group_size, 0.5)
    np.testing.assert_allclose(y, expected, atol=2e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), moving_mean, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), moving_variance, atol=1e-5)
    # Inference ignores the ghost batches.
    np.testing.assert_allclose(layer(tf.constant(x[:3]), training=False).numpy(),
                               layer(tf.constant(x), training=False).numpy()[:3], atol=1e-6)


def test_ghost_batches_with_a_mask_and_an_unknown_batch_size():
    """In a traced function whose batch size is unknown (fit's partial last batch), with a
    mask: the groups' masked statistics, 10 = 4 + 4 + 2."""
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(10, 6, 3)) * 2 - 1).astype(np.float32)
    mask = rng.uniform(size=(10, 6)) > 0.3
    mask[:, 0] = True  # every group keeps some values
    layer = BatchNormalization(virtual_batch_size=4, momentum=0.5)
    layer.build(x.shape)

    @tf.function(input_signature=[tf.TensorSpec([None, 6, 3]), tf.TensorSpec([None, 6], tf.bool)])
    def step(x, mask):
        return layer(x, training=True, mask=mask)

    y = step(tf.constant(x), tf.constant(mask)).numpy()
    expected, moving_mean, moving_variance = equivalence.numpy_ghost_batch_norm(x, 4, 0.5, mask)
    np.testing.assert_allclose(y, expected, atol=2e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), moving_mean, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), moving_variance, atol=1e-5)


@pytest.mark.slow
def test_ghost_bn_trains_with_fit_on_a_partial_last_batch():
    """A dataset of 45 at batch 16 (16 + 16 + 13), groups of 8: fit runs every step."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(45, 8, 8, 3)).astype(np.float32), rng.integers(0, 3, 45)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3)(inputs)
    h = BatchNormalization(virtual_batch_size=8)(h)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 6
    assert np.all(np.isfinite(history.history["loss"]))


# (arguments, exception, Keras' own phrase for the mistake, our detail after it)
BAD_ARGUMENTS = [
    ({"axis": "a"}, ValueError, "invalid literal for int() with base 10: 'a'",
     "`axis` must be an int, got 'a'"),
    ({"renorm": True, "renorm_clipping": {"rmax": 3, "bogus": 1}}, ValueError,
     "Received invalid keys for `renorm_clipping` argument",
     "unknown `renorm_clipping` keys ['bogus']"),
    ({"renorm": True, "renorm_clipping": {"rmax": 1, "rmin": 2}}, ValueError,
     "rmax should be greater than rmin in the `renorm_clipping` argument",
     "Received: rmax=1, rmin=2"),
    ({"renorm": True, "renorm_clipping": {"dmax": -1}}, ValueError,
     "dmax should be non-negative in the `renorm_clipping` argument", "Received: dmax=-1"),
    ({"momentun": 0.9}, ValueError, "Unrecognized keyword arguments passed to BatchNormalization",
     "momentun"),
]


@pytest.mark.parametrize("kwargs,error,keras_phrase,detail", BAD_ARGUMENTS,
                         ids=[str(a[0]) for a in BAD_ARGUMENTS])
def test_bad_arguments_raise_with_keras_wording_then_ours(kwargs, error, keras_phrase, detail):
    with pytest.raises(error, match=re.escape(keras_phrase)):
        keras.layers.BatchNormalization(**kwargs)
    with pytest.raises(error, match=re.escape(keras_phrase)) as raised:
        BatchNormalization(**kwargs)
    assert detail in str(raised.value)


@pytest.mark.parametrize("kwargs,error,pattern", [
    # tf-keras' wording, for the argument Keras 3 dropped
    ({"virtual_batch_size": 0}, ValueError,
     r"`virtual_batch_size` must be a positive integer\. Received: virtual_batch_size=0"),
    ({"virtual_batch_size": 4, "renorm": True}, ValueError, "cannot be combined"),
    ({"axis": 1.5}, TypeError, "`axis` must be an int, got 1.5"),
])
def test_arguments_keras_lacks_or_accepts_raise_clear_errors(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        BatchNormalization(**kwargs)


def test_numpy_integer_axis_is_accepted():
    layer = BatchNormalization(axis=np.int64(1))
    assert layer(tf.ones((2, 3, 4)), training=False).shape == (2, 3, 4)


def test_axis_out_of_range_names_the_axis():
    keras_phrase = "Axis 3 is out of bounds for input shape (2, 4, 5)"
    with pytest.raises(ValueError, match=re.escape(keras_phrase)):
        keras.layers.BatchNormalization(axis=3).compute_output_shape((2, 4, 5))
    with pytest.raises(ValueError, match=re.escape(keras_phrase)) as raised:
        BatchNormalization(axis=3)(tf.zeros((2, 4, 5)))
    assert "axis=3 is out of range for inputs of rank 3" in str(raised.value)


def test_mask_of_wrong_rank_uses_keras_wording():
    phrase = "The mask provided should be one dimension less than the inputs"
    x, mask = tf.zeros((2, 4, 5)), tf.ones((2, 4, 5), bool)
    for layer in (keras.layers.BatchNormalization(), BatchNormalization()):
        with pytest.raises(ValueError, match=phrase):
            layer(x, mask=mask)


def test_ghost_batches_refuse_the_batch_axis_as_feature_axis():
    with pytest.raises(ValueError, match="axis cannot include 0. Received axis=0"):
        BatchNormalization(axis=0, virtual_batch_size=2)(tf.zeros((4, 3)), training=True)


def test_synchronized_statistics_span_replicas(mirrored_strategy):
    """Under a 2-replica MirroredStrategy, synchronized BN sees the global batch. (The full
    proof, gradients and every backend included: tests/backends/test_synchronized.py.)"""
    strategy = mirrored_strategy
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(8, 4, 4, 3)) * np.arange(1, 4) + np.arange(3)).astype(np.float32)
    x[4:] += 5.0  # the replicas' halves differ, so local statistics would too

    single = BatchNormalization(momentum=0.5)
    expected = single(tf.constant(x), training=True).numpy()
    for synchronized in (True, False):
        with strategy.scope():
            layer = BatchNormalization(momentum=0.5, synchronized=synchronized)
            layer.build(x.shape)
        dataset = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(x).batch(8))
        per_replica = strategy.run(lambda batch, layer=layer: layer(batch, training=True),
                                   args=(next(iter(dataset)),))
        y = np.concatenate([t.numpy() for t in strategy.experimental_local_results(per_replica)])
        if synchronized:
            np.testing.assert_allclose(y, expected, atol=1e-5)
            np.testing.assert_allclose(layer.moving_mean.numpy(), single.moving_mean.numpy(),
                                       atol=1e-5)
            np.testing.assert_allclose(layer.moving_variance.numpy(),
                                       single.moving_variance.numpy(), atol=1e-5)
        else:
            assert np.max(np.abs(y - expected)) > 0.1


def test_ghost_bn_layer_survives_a_save_and_load_round_trip(tmp_path):
    """A layer with virtual_batch_size saved in a .keras file and loaded back keeps its
    groups (training-mode output), its statistics (inference) and its config
    (keras-team/keras#16713 broke exactly this in tf-keras)."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(12, 5, 7)) * 3 + 1).astype(np.float32)
    layer = BatchNormalization(virtual_batch_size=4, momentum=0.5, name="ghost")
    model = keras.Sequential([keras.Input((5, 7)), layer])
    model(x, training=True)  # moves the moving statistics
    path = tmp_path / "ghost.keras"
    model.save(path)
    loaded = keras.models.load_model(path).get_layer("ghost")
    assert isinstance(loaded, BatchNormalization)
    assert loaded.get_config() == layer.get_config() and loaded.virtual_batch_size == 4
    for a, b in zip(loaded.get_weights(), layer.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded(x, training=False).numpy(),
                               layer(x, training=False).numpy(), atol=1e-6)
    plain = BatchNormalization()(x, training=True).numpy()
    ghost = loaded(x, training=True).numpy()
    np.testing.assert_allclose(ghost, layer(x, training=True).numpy(), atol=1e-6)
    assert np.abs(ghost - plain).max() > 0.1  # the groups of 4 are normalized each on its own
