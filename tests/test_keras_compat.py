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
