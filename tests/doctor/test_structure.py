"""bn_keras.doctor.structure: BN layers that do nothing, normalize the wrong axis, follow a
bias, or are frozen; read from built models, no training."""

import keras
import numpy as np
import pytest

import bn_keras
from bn_keras import models
from bn_keras.layers import BatchNormalization


def _checks(diagnosis):
    return {f.check: f for f in diagnosis.findings}


def test_the_tutorials_network_is_told_in_one_line_that_its_bn_layers_do_nothing():
    diagnosis = bn_keras.diagnose_batch_norm(models.lenet_tutorial())
    assert diagnosis.summary() == (
        "lenet_tutorial: BN broken (1 error). error: bn1, bn2: never called by the forward "
        "pass: these BN layers have no effect")
    finding = diagnosis.find("never_called")
    assert finding.layers == ("bn1", "bn2") and not finding.fixable
    assert "0.5902" in finding.cost  # the BN study's measurement of the mistake
    assert not diagnosis.healthy


def test_a_layer_called_but_its_output_dropped_has_no_effect():
    class Dropped(keras.Model):
        def __init__(self):
            super().__init__(name="dropped")
            self.dense = keras.layers.Dense(4)
            self.bn = BatchNormalization(name="bn")
            self.out = keras.layers.Dense(2)

        def call(self, x, training=None):
            h = self.dense(x)
            self.bn(h, training=training)  # the mistake: its result is not used
            return self.out(h)

    model = Dropped()
    model(np.zeros((2, 3), np.float32))
    finding = bn_keras.diagnose_batch_norm(model).find("output_unused")
    assert finding.layers == ("bn",)
    assert finding.numbers["bn"]["calls"] == 1


def test_without_an_input_unbuilt_layers_are_never_called():
    """With no input to run the model on, a BN layer left unbuilt in a built model is known
    never to have been called."""
    model = models.lenet_tutorial()
    model.get_build_config = lambda: None  # as if the model did not say its input shape
    diagnosis = bn_keras.diagnose_batch_norm(model)
    assert diagnosis.find("never_called").layers == ("bn1", "bn2")
    assert "effect" in diagnosis.skipped


@pytest.mark.parametrize("bn", [keras.layers.BatchNormalization, BatchNormalization])
def test_bn_on_the_wrong_axis_after_a_channels_first_convolution(bn):
    inputs = keras.Input((3, 12, 12))
    x = keras.layers.Conv2D(5, 3, data_format="channels_first", use_bias=False,
                            name="conv")(inputs)
    x = keras.layers.ReLU()(x)
    x = bn(name="bn")(x)  # axis=-1: the width
    good = bn(axis=1, name="good_bn")(keras.layers.Conv2D(
        4, 3, data_format="channels_first", name="conv2")(x))
    model = keras.Model(inputs, keras.layers.Flatten()(good))
    findings = bn_keras.diagnose_batch_norm(model).findings
    axis = [f for f in findings if f.check == "axis_mismatch"]
    assert [f.layers for f in axis] == [("bn",)]
    assert axis[0].numbers == {"axis": 3, "expected_axis": 1, "shape": [None, 5, 10, 10]}


def test_a_bias_right_before_a_centered_bn_is_counted():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, name="conv")(inputs)  # bias: wasted
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="clean")(x)
    x = keras.layers.BatchNormalization(name="clean_bn")(x)
    x = keras.layers.Dense(5, name="dense")(keras.layers.Flatten()(x))
    x = keras.layers.BatchNormalization(center=False, name="uncentered_bn")(x)  # keeps it
    diagnosis = bn_keras.diagnose_batch_norm(keras.Model(inputs, x))
    finding = diagnosis.find("bias_before_bn")
    assert finding.layers == ("conv_bn",) and finding.numbers == {"parameters": 6}
    assert finding.severity == "info" and diagnosis.healthy


def test_frozen_layers_are_named_with_what_trainable_false_means():
    model = models.lenet_cifar("keras")
    bn_keras.freeze_batch_norm(model)
    finding = bn_keras.diagnose_batch_norm(model).find("frozen")
    assert finding.layers == ("conv1_bn", "conv2_bn", "fc1_bn", "fc2_bn")
    assert "inference mode" in finding.problem and finding.severity == "info"


def test_nested_models_name_their_layers_by_path():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="bn")(inner_in),
                        name="inner")
    inputs = keras.Input((4,))
    x = inner(keras.layers.Dense(4, use_bias=False)(inputs))
    diagnosis = bn_keras.diagnose_batch_norm(keras.Model(inputs, x))
    assert diagnosis.bn_layers == ("inner/bn",)


def test_a_model_without_bn():
    diagnosis = bn_keras.diagnose_batch_norm(models.lenet_cifar("none"))
    assert diagnosis.summary() == "lenet_none: no BN layers." and diagnosis.healthy
