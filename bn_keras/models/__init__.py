"""Functional-API models of the tutorial and of the BN study, each with a BN switch.

    from bn_keras import models
    model = models.build_model("lenet", bn="custom", momentum=0.9)

- `conv1d_bn_example`: the tutorial's Conv1D(64, 3) + BN on (128, 256) sequences;
- `lenet_cifar`: the tutorial's LeNet-style CIFAR-10 CNN, BN wired in (or not);
- `lenet_tutorial`: that network as the tutorial wrote it, BN built and never called;
- `resnet20`: He et al.'s CIFAR ResNet-20.

`bn` is "none", "keras" (Keras' BatchNormalization) or "custom" (ours); BN options
go to every BN layer (bn_keras.models.normalization). The names, choices and rules
(`options`) need no Keras; names load their module on first use, and loading a builder
registers the models' own layer classes for Keras serialization.
"""

from bn_keras import lazy

_OPTIONS = ("BATCH_NORMS", "BN_CHOICES", "GROUP_NORM_GROUPS", "MACS_PER_EXAMPLE", "MODELS",
            "OTHER_NORMS", "PLACEMENTS", "check_bn",
            "check_options", "check_placement", "check_zero_init_residual")
_PUBLIC = {
    **{name: "bn_keras.models.options" for name in _OPTIONS},
    "MODEL_BUILDERS": "bn_keras.models.builders",
    "build_model": "bn_keras.models.builders",
    "conv1d_bn_example": "bn_keras.models.conv1d",
    "TutorialLeNet": "bn_keras.models.lenet",
    "lenet_cifar": "bn_keras.models.lenet",
    "lenet_tutorial": "bn_keras.models.lenet",
    "make_bn": "bn_keras.models.normalization",
    "ZeroPadShortcut": "bn_keras.models.resnet",
    "resnet20": "bn_keras.models.resnet",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy.exports(__name__, globals(), _PUBLIC)
