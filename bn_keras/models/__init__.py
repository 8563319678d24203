"""Functional-API models of the tutorial and of the BN study, each with a BN switch.

    from bn_keras import models
    model = models.build_model("lenet", bn="custom", momentum=0.9)

- `conv1d_bn_example`: the tutorial's Conv1D(64, 3) + BN on (128, 256) sequences;
- `lenet_cifar`: the tutorial's LeNet-style CIFAR-10 CNN, BN wired in (or not);
- `lenet_tutorial`: that network as the tutorial wrote it, BN built and never called;
- `resnet20`: He et al.'s CIFAR ResNet-20.

`bn` is "none", "keras" (Keras' BatchNormalization) or "custom" (ours); BN options
go to every BN layer (bn_keras.models.normalization). Importing this package
registers the models' own layer classes for Keras serialization.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from bn_keras.models.conv1d import conv1d_bn_example
from bn_keras.models.lenet import TutorialLeNet, lenet_cifar, lenet_tutorial
from bn_keras.models.normalization import (
    BN_CHOICES,
    PLACEMENTS,
    check_bn,
    check_placement,
    make_bn,
)
from bn_keras.models.resnet import ZeroPadShortcut, check_zero_init_residual, resnet20

# Multiply-adds of one example's forward pass, counted from the layers' shapes
# (tests/test_models.py recounts them): the size of a training step, for settings that
# depend on it (bn_keras.train.config.TrainConfig.resolved_threads).
MACS_PER_EXAMPLE = {"lenet": 651_720, "lenet_tutorial": 651_720, "resnet20": 40_551_040,
                    "conv1d_example": 6_193_792}

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
    placement = options.pop("placement", PLACEMENTS[0])
    check_placement(placement)
    options.pop("num_classes", None)
    if options.pop("zero_init_residual", False):
        if name != "resnet20":
            raise ValueError(f"zero_init_residual applies to model='resnet20' (the blocks' "
                             f"last BN), not to model={name!r}.")
        check_zero_init_residual(bn, placement)
    if bn != "none":
        make_bn(bn, "check", **options)


__all__ = ["BN_CHOICES", "MODEL_BUILDERS", "PLACEMENTS", "TutorialLeNet", "ZeroPadShortcut",
           "build_model", "check_bn", "check_options", "conv1d_bn_example", "lenet_cifar",
           "lenet_tutorial", "make_bn", "resnet20"]
