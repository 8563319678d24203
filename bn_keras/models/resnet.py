"""ResNet-20 for CIFAR-10 (He et al., 2016), with the BN switch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import layers

from bn_keras.data.cifar import IMAGE_SHAPE, NUM_CLASSES
from bn_keras.models.normalization import make_bn, normalized_relu
from bn_keras.models.options import check_bn, check_placement, check_zero_init_residual


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
             zero_init_residual: bool = False, **bn_options: Any) -> keras.Model:
    """ResNet-20 for CIFAR-10 (He et al., 2016, section 4.2): 0.27M parameters.

    A 3x3 conv with 16 filters, three stages of three basic blocks (16, 32, 64
    filters; stride 2 at the start of stages 2 and 3), global average pooling
    and a 10-way dense layer; shortcuts are identities, zero-padded where the
    width doubles (option A). The paper reports 8.75% test error.

    `zero_init_residual`: each block's last BN starts with gamma = 0, so every block
    starts as the identity (Goyal et al., 2017; He et al., 2019, "Bag of Tricks";
    torchvision's option of the same name). Needs BN before the ReLU.
    """
    return _cifar_resnet(3, bn, placement, bn_options, zero_init_residual)


def _cifar_resnet(blocks_per_stage: int, bn: str, placement: str,
                  bn_options: Mapping[str, Any], zero_init_residual: bool = False
                  ) -> keras.Model:
    check_bn(bn)
    check_placement(placement)
    if zero_init_residual:
        check_zero_init_residual(bn, placement)
    last_bn_options = ({**bn_options, "gamma_initializer": "zeros"} if zero_init_residual
                       else bn_options)
    use_bias = bn == "none" or placement == "after_relu"

    def conv(x, filters, stride, name):
        return layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=use_bias,
                             kernel_initializer="he_normal", name=name)(x)

    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = normalized_relu(conv(inputs, 16, 1, "stem_conv"), bn, "stem", placement, bn_options)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, blocks_per_stage + 1):
            name = f"stage{stage}_block{block}"
            stride = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            if stride != 1 or x.shape[-1] != filters:
                shortcut = ZeroPadShortcut(stride, filters - x.shape[-1],
                                           name=f"{name}_shortcut")(x)
            y = normalized_relu(conv(x, filters, stride, f"{name}_conv1"), bn,
                                 f"{name}_1", placement, bn_options)
            y = conv(y, filters, 1, f"{name}_conv2")
            norm = make_bn(bn, f"{name}_2_bn", len(y.shape), **last_bn_options)
            if norm is not None and placement == "before_relu":
                y = norm(y)
            x = layers.Add(name=f"{name}_add")([y, shortcut])
            x = layers.ReLU(name=f"{name}_out")(x)
            if norm is not None and placement == "after_relu":
                x = norm(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"resnet{6 * blocks_per_stage + 2}_{bn}")
