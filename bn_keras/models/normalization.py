"""The BN switch every model builder shares: which BN, and where it sits around the ReLU.

`bn` selects the normalization everywhere:

- ``"none"``: no BN (convolutions and dense layers keep their biases);
- ``"keras"``: `keras.layers.BatchNormalization`;
- ``"custom"``: `bn_keras.layers.BatchNormalization` (ours).

`bn_options` are passed to every BN layer (`momentum`, `virtual_batch_size`,
`renorm`, `synchronized`, ...). `placement` puts BN before the ReLU (as in
Ioffe & Szegedy) or after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import layers

from bn_keras.layers.batch_normalization import BatchNormalization
from bn_keras.models.options import check_bn


def make_bn(bn: str, name: str, **bn_options: Any) -> keras.layers.Layer | None:
    """A BN layer of the chosen implementation, or None for bn="none"."""
    if check_bn(bn) == "none":
        return None
    cls = keras.layers.BatchNormalization if bn == "keras" else BatchNormalization
    return cls(name=name, **bn_options)


def normalized_relu(x, bn: str, name: str, placement: str, bn_options: Mapping[str, Any]):
    """BN then ReLU (or ReLU then BN); plain ReLU when bn="none"."""
    norm = make_bn(bn, f"{name}_bn", **bn_options)
    if norm is not None and placement == "before_relu":
        x = norm(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    if norm is not None and placement == "after_relu":
        x = norm(x)
    return x
