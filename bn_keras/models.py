"""Functional-API models of the tutorial and of the BN study, each with a BN switch.

`bn` selects the normalization everywhere:

- ``"none"``: no BN (convolutions and dense layers keep their biases);
- ``"keras"``: `keras.layers.BatchNormalization`;
- ``"custom"``: `bn_keras.layers.BatchNormalization` (ours).

`bn_options` are passed to every BN layer (`momentum`, `virtual_batch_size`,
`renorm`, `synchronized`, ...). `placement` puts BN before the ReLU (as in
Ioffe & Szegedy) or after it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import keras
from keras import layers

from bn_keras.cifar import IMAGE_SHAPE, NUM_CLASSES
from bn_keras.layers import BatchNormalization

BN_CHOICES = ("none", "keras", "custom")
PLACEMENTS = ("before_relu", "after_relu")


def check_bn(bn: str) -> str:
    """Returns `bn` if it names a BN implementation, else raises ValueError."""
    if bn not in BN_CHOICES:
        raise ValueError(f"Unknown bn={bn!r}; expected one of {', '.join(BN_CHOICES)}.")
    return bn


def make_bn(bn: str, name: str, **bn_options: Any) -> keras.layers.Layer | None:
    """A BN layer of the chosen implementation, or None for bn="none"."""
    if check_bn(bn) == "none":
        return None
    cls = keras.layers.BatchNormalization if bn == "keras" else BatchNormalization
    return cls(name=name, **bn_options)


def _check_placement(placement: str) -> None:
    if placement not in PLACEMENTS:
        raise ValueError(
            f"Unknown placement={placement!r}; expected one of {', '.join(PLACEMENTS)}."
        )


def _normalized_relu(x, bn: str, name: str, placement: str, bn_options: Mapping[str, Any]):
    """BN then ReLU (or ReLU then BN); plain ReLU when bn="none"."""
    norm = make_bn(bn, f"{name}_bn", **bn_options)
    if norm is not None and placement == "before_relu":
        x = norm(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    if norm is not None and placement == "after_relu":
        x = norm(x)
    return x


def conv1d_bn_example(bn: str = "keras", num_classes: int | None = None,
                      **bn_options: Any) -> keras.Model:
    """The tutorial's TensorFlow example: Input(128, 256) -> Conv1D(64, 3) -> BN.

    Output shape (None, 126, 64). With `num_classes`, a global-average-pool and
    a dense logits head are appended so the example can be trained.
    """
    if check_bn(bn) == "none":
        raise ValueError("conv1d_bn_example is the tutorial's BN example; bn='none' has no BN.")
    inputs = keras.Input(shape=(128, 256), name="sequence")
    x = layers.Conv1D(64, 3, name="conv")(inputs)
    x = make_bn(bn, "bn", **bn_options)(x)
    if num_classes is not None:
        x = layers.GlobalAveragePooling1D(name="pool")(x)
        x = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, x, name=f"conv1d_bn_example_{bn}")


def lenet_cifar(bn: str = "none", placement: str = "before_relu",
                **bn_options: Any) -> keras.Model:
    """The tutorial's LeNet-style CIFAR-10 CNN, returning logits.

    conv 6@5x5 - maxpool 2 - conv 16@5x5 - maxpool 2 - dense 120 - dense 84 -
    dense 10, ReLU activations, with BN after each conv and hidden dense layer.
    bn="none" has exactly 62,006 parameters, like the tutorial's PyTorch net.
    BN before the ReLU makes the preceding bias redundant, so it is dropped.
    """
    check_bn(bn)
    _check_placement(placement)
    use_bias = bn == "none" or placement == "after_relu"
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = inputs
    for i, filters in enumerate((6, 16), start=1):
        x = layers.Conv2D(filters, 5, use_bias=use_bias, name=f"conv{i}")(x)
        x = _normalized_relu(x, bn, f"conv{i}", placement, bn_options)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate((120, 84), start=1):
        x = layers.Dense(units, use_bias=use_bias, name=f"fc{i}")(x)
        x = _normalized_relu(x, bn, f"fc{i}", placement, bn_options)
    outputs = layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"lenet_{bn}")


@keras.saving.register_keras_serializable(package="bn_keras", name="ZeroPadShortcut")
class ZeroPadShortcut(layers.Layer):
    """ResNet's option-A shortcut: subsample by `stride`, zero-pad new channels."""

    def __init__(self, stride: int, extra_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride
        self.extra_channels = extra_channels

    def call(self, x):
        x = x[:, :: self.stride, :: self.stride, :]
        pad = self.extra_channels // 2
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [pad, self.extra_channels - pad]])

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        shrink = lambda d: None if d is None else -(-d // self.stride)  # noqa: E731
        return (n, shrink(h), shrink(w), c + self.extra_channels)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride,
                "extra_channels": self.extra_channels}


def resnet20(bn: str = "custom", placement: str = "before_relu",
             **bn_options: Any) -> keras.Model:
    """ResNet-20 for CIFAR-10 (He et al., 2016, section 4.2): 0.27M parameters.

    A 3x3 conv with 16 filters, three stages of three basic blocks (16, 32, 64
    filters; stride 2 at the start of stages 2 and 3), global average pooling
    and a 10-way dense layer; shortcuts are identities, zero-padded where the
    width doubles (option A). The paper reports 8.75% test error.
    """
    return _cifar_resnet(3, bn, placement, bn_options)


def _cifar_resnet(blocks_per_stage: int, bn: str, placement: str,
                  bn_options: Mapping[str, Any]) -> keras.Model:
    check_bn(bn)
    _check_placement(placement)
    use_bias = bn == "none" or placement == "after_relu"

    def conv(x, filters, stride, name):
        return layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=use_bias,
                             kernel_initializer="he_normal", name=name)(x)

    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = _normalized_relu(conv(inputs, 16, 1, "stem_conv"), bn, "stem", placement, bn_options)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, blocks_per_stage + 1):
            name = f"stage{stage}_block{block}"
            stride = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            if stride != 1 or x.shape[-1] != filters:
                shortcut = ZeroPadShortcut(stride, filters - x.shape[-1],
                                           name=f"{name}_shortcut")(x)
            y = _normalized_relu(conv(x, filters, stride, f"{name}_conv1"), bn,
                                 f"{name}_1", placement, bn_options)
            y = conv(y, filters, 1, f"{name}_conv2")
            norm = make_bn(bn, f"{name}_2_bn", **bn_options)
            if norm is not None and placement == "before_relu":
                y = norm(y)
            x = layers.Add(name=f"{name}_add")([y, shortcut])
            x = layers.ReLU(name=f"{name}_out")(x)
            if norm is not None and placement == "after_relu":
                x = norm(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"resnet{6 * blocks_per_stage + 2}_{bn}")


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


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "lenet": lenet_cifar,
    "resnet20": resnet20,
    "conv1d_example": conv1d_bn_example,
    "lenet_tutorial": lenet_tutorial,
}


def build_model(name: str, bn: str, **kwargs: Any) -> keras.Model:
    """Builds a model by name (`lenet`, `resnet20`, `conv1d_example`)."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"Unknown model={name!r}; expected one of {', '.join(MODEL_BUILDERS)}.")
    return MODEL_BUILDERS[name](bn=bn, **kwargs)


def check_options(name: str, bn: str, **kwargs: Any) -> None:
    """Raises ValueError for what `build_model(name, bn, **kwargs)` would refuse, building nothing.

    The BN layer checks its own arguments: one layer is constructed (not built) with
    the BN options, so a configuration is held to exactly the layer's rules.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(f"Unknown model={name!r}; expected one of {', '.join(MODEL_BUILDERS)}.")
    check_bn(bn)
    if name == "conv1d_example" and bn == "none":
        raise ValueError("model='conv1d_example' is the tutorial's BN example; pick bn=keras "
                         "or bn=custom.")
    options = dict(kwargs)
    _check_placement(options.pop("placement", PLACEMENTS[0]))
    options.pop("num_classes", None)
    if bn != "none":
        make_bn(bn, "check", **options)
