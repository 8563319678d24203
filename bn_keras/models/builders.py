"""Every model by name: `build_model("lenet", bn="custom")`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from bn_keras.models.conv1d import conv1d_bn_example
from bn_keras.models.lenet import lenet_cifar, lenet_tutorial
from bn_keras.models.options import check_model
from bn_keras.models.resnet import resnet20

MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "lenet": lenet_cifar,
    "resnet20": resnet20,
    "conv1d_example": conv1d_bn_example,
    "lenet_tutorial": lenet_tutorial,
}


def build_model(name: str, bn: str, **kwargs: Any) -> keras.Model:
    """Builds a model by name (bn_keras.models.options.MODELS)."""
    return MODEL_BUILDERS[check_model(name)](bn=bn, **kwargs)
