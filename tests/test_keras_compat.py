"""bn_keras.keras_compat: the private Keras and TensorFlow names bn_keras relies on.

This test fails, naming each one, when a Keras or TensorFlow upgrade drops or moves one:
recheck what it is used for (its docstring says) before changing the version pins.
"""

import keras

from bn_keras import keras_compat


def test_every_private_name_is_still_there():
    assert keras_compat.missing(tensorflow=True) == [], (
        f"checked with {keras_compat.CHECKED_WITH}; now keras {keras.__version__}")


def test_a_name_that_is_gone_is_named(monkeypatch):
    from keras.src.backend.tensorflow import trainer

    monkeypatch.delattr(trainer, "reduce_per_replica")
    assert keras_compat.missing(tensorflow=True) == [
        "patch_reduce_per_replica: keras.src.backend.tensorflow.trainer.reduce_per_replica"]


def test_the_graph_accessors_see_one_call_each():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3)
    bn = keras.layers.BatchNormalization()
    outputs = bn(dense(inputs))
    keras.Model(inputs, outputs)
    assert keras_compat.producer(bn.input) is dense
    assert len(keras_compat.calls(bn)) == len(keras_compat.consumers(dense)) == 1
    assert keras_compat.producer(inputs) is not dense


def test_the_channels_first_bias_bug_is_still_there_where_it_is_worked_around():
    """When this fails, Keras fixed it: drop the workaround (and its refusal in folding)."""
    import numpy as np

    x = np.random.default_rng(0).normal(size=(2, 4, 7, 7)).astype("float32")
    conv = keras.layers.Conv2D(5, 3, data_format="channels_first",
                               bias_initializer="random_normal")
    y = keras.ops.convert_to_numpy(conv(x))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in conv.weights)
    plain = keras.layers.Conv2D(5, 3, data_format="channels_first", use_bias=False)
    plain.build(x.shape)
    plain.set_weights([kernel])
    right = keras.ops.convert_to_numpy(plain(x)) + bias[None, :, None, None]
    assert keras_compat.misplaces_channels_first_bias(conv, y.shape)
    assert not np.allclose(y, right, atol=1e-5)
