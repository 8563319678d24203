"""The models' names and the options they take, with the rules on them: no Keras.

A configuration (bn_keras.train.config) checks its model settings against these
without importing Keras or TensorFlow; the builders (bn_keras.models.builders) apply the
same rules when they build.
"""

from __future__ import annotations

from typing import Any

from bn_keras.layers.arguments import check_arguments

MODELS = ("lenet", "resnet20", "conv1d_example", "lenet_tutorial")
# `bn`: no BN, Keras' BatchNormalization, or ours (bn_keras.models.normalization); or, in
# BN's place, batch-independent normalizations: GroupNormalization, LayerNormalization.
BATCH_NORMS = ("keras", "custom")
OTHER_NORMS = ("group_norm", "layer_norm")
BN_CHOICES = ("none", *BATCH_NORMS, *OTHER_NORMS)
# GroupNormalization's groups: 2 divides every normalized width of LeNet (6, 16, 120, 84)
# and ResNet-20 (16, 32, 64).
GROUP_NORM_GROUPS = 2
PLACEMENTS = ("before_relu", "after_relu")

# Multiply-adds of one example's forward pass, counted from the layers' shapes
# (tests/models/test_models.py recounts them): the size of a training step, for settings
# that depend on it (bn_keras.train.config.TrainConfig.resolved_threads).
MACS_PER_EXAMPLE = {"lenet": 651_720, "lenet_tutorial": 651_720, "resnet20": 40_551_040,
                    "conv1d_example": 6_193_792}


def check_model(name: str) -> str:
    """Returns `name` if it names a model, else raises ValueError."""
    if name not in MODELS:
        raise ValueError(f"Unknown model={name!r}; expected one of {', '.join(MODELS)}.")
    return name


def check_bn(bn: str) -> str:
    """Returns `bn` if it names a BN implementation, else raises ValueError."""
    if bn not in BN_CHOICES:
        raise ValueError(f"Unknown bn={bn!r}; expected one of {', '.join(BN_CHOICES)}.")
    return bn


def check_placement(placement: str) -> None:
    if placement not in PLACEMENTS:
        raise ValueError(
            f"Unknown placement={placement!r}; expected one of {', '.join(PLACEMENTS)}."
        )


def check_zero_init_residual(bn: str, placement: str) -> None:
    if bn not in BATCH_NORMS or placement != "before_relu":
        raise ValueError("zero_init_residual starts each block's last BN at gamma = 0: it "
                         "needs BN (bn=keras or bn=custom) before the ReLU.")


# What every BN layer of a model takes besides the layer's own rules' arguments.
_BN_OPTIONS = ("momentum", "epsilon", "center", "scale", "gamma_initializer")


def check_options(name: str, bn: str, **kwargs: Any) -> None:
    """Raises ValueError for what `build_model(name, bn, **kwargs)` would refuse, building
    nothing: the model's own options, then the BN options by the layer's rules
    (bn_keras.layers.arguments, which Keras' layer follows too)."""
    check_model(name)
    check_bn(bn)
    if name in ("conv1d_example", "lenet_tutorial") and bn not in BATCH_NORMS:
        raise ValueError(f"model={name!r} is the tutorial's BN example; pick bn=keras "
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
    if bn not in BATCH_NORMS:
        if options:
            raise ValueError(f"bn={bn!r} takes no BN options "
                             f"({', '.join(sorted(options))}): pick bn=keras or bn=custom.")
        return
    if bn == "keras" and options.get("virtual_batch_size") is not None:
        raise ValueError(f"virtual_batch_size={options['virtual_batch_size']} (Ghost BN) needs "
                         "bn='custom': Keras 3's BatchNormalization has no such argument.")
    check_arguments(options.pop("axis", -1), options.pop("renorm", False),
                    options.pop("renorm_clipping", None), options.pop("synchronized", False),
                    options.pop("virtual_batch_size", None))
    unknown = sorted(set(options) - set(_BN_OPTIONS))
    if unknown:
        raise TypeError(f"Unknown BN options {unknown} for model={name!r}.")
