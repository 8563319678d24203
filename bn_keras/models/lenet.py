"""The tutorial's LeNet-style CIFAR-10 CNN: with BN wired in, and as the tutorial wrote it."""

from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import layers

from bn_keras.data.cifar import IMAGE_SHAPE, NUM_CLASSES
from bn_keras.models.normalization import make_bn, normalized_relu
from bn_keras.models.options import check_bn, check_placement


def lenet_cifar(bn: str = "none", placement: str = "before_relu",
                **bn_options: Any) -> keras.Model:
    """The tutorial's LeNet-style CIFAR-10 CNN, returning logits.

    conv 6@5x5 - maxpool 2 - conv 16@5x5 - maxpool 2 - dense 120 - dense 84 -
    dense 10, ReLU activations, with BN after each conv and hidden dense layer.
    bn="none" has exactly 62,006 parameters, like the tutorial's PyTorch net.
    BN before the ReLU makes the preceding bias redundant, so it is dropped.
    """
    check_bn(bn)
    check_placement(placement)
    use_bias = bn == "none" or placement == "after_relu"
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = inputs
    for i, filters in enumerate((6, 16), start=1):
        x = layers.Conv2D(filters, 5, use_bias=use_bias, name=f"conv{i}")(x)
        x = normalized_relu(x, bn, f"conv{i}", placement, bn_options)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate((120, 84), start=1):
        x = layers.Dense(units, use_bias=use_bias, name=f"fc{i}")(x)
        x = normalized_relu(x, bn, f"fc{i}", placement, bn_options)
    outputs = layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"lenet_{bn}")


@keras.saving.register_keras_serializable(package="bn_keras", name="TutorialLeNet")
class TutorialLeNet(keras.Model):
    """The tutorial's "with BN" LeNet, bug included, for the BN study.

    Like the tutorial's PyTorch `__init__`, it creates BN layers for 6 and 84
    features (`bn1`, `bn2`) and never calls them: the forward pass is the
    no-BN network, with its 62,006 parameters, and it trains identically.
    """

    def __init__(self, bn: str = "keras", **kwargs):
        kwargs.pop("placement", None)
        super().__init__(name=kwargs.pop("name", "lenet_tutorial"), **kwargs)
        self.bn = check_bn(bn)
        self.conv1 = layers.Conv2D(6, 5, name="conv1")
        self.bn1 = make_bn(bn if bn != "none" else "keras", "bn1")  # created, never called
        self.pool = layers.MaxPooling2D(2)
        self.conv2 = layers.Conv2D(16, 5, name="conv2")
        self.flatten = layers.Flatten()
        self.fc1 = layers.Dense(120, name="fc1")
        self.fc2 = layers.Dense(84, name="fc2")
        self.bn2 = make_bn(bn if bn != "none" else "keras", "bn2")  # created, never called
        self.fc3 = layers.Dense(NUM_CLASSES, name="logits")

    def call(self, x, training=None):
        x = self.pool(keras.ops.relu(self.conv1(x)))
        x = self.pool(keras.ops.relu(self.conv2(x)))
        x = keras.ops.relu(self.fc1(self.flatten(x)))
        x = keras.ops.relu(self.fc2(x))
        return self.fc3(x)

    def get_config(self):
        return {"bn": self.bn, "name": self.name}


def lenet_tutorial(bn: str = "keras", **_: Any) -> keras.Model:
    """TutorialLeNet, built on CIFAR's input shape."""
    model = TutorialLeNet(bn)
    with warnings.catch_warnings():
        # Keras rightly warns that bn1/bn2 stay unbuilt: that is the tutorial's bug.
        warnings.simplefilter("ignore", UserWarning)
        model(keras.ops.zeros((1, *IMAGE_SHAPE)))  # builds only the layers the forward pass calls
    return model
