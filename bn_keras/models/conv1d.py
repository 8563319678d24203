"""The tutorial's TensorFlow example: a Conv1D followed by BN, on (128, 256) sequences."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from bn_keras.models.normalization import make_bn
from bn_keras.models.options import check_bn


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
    x = make_bn(bn, "bn", len(x.shape), **bn_options)(x)
    if num_classes is not None:
        x = layers.GlobalAveragePooling1D(name="pool")(x)
        x = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, x, name=f"conv1d_bn_example_{bn}")
