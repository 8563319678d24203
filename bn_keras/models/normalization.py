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
from bn_keras.models.options import GROUP_NORM_GROUPS, check_bn


def make_bn(bn: str, name: str, rank: int | None = None, **bn_options: Any
            ) -> keras.layers.Layer | None:
    """The chosen normalization layer, or None for bn="none": BN (Keras' or ours, with
    `bn_options`), or, in BN's place, GroupNormalization with GROUP_NORM_GROUPS groups
    (`group_norm`) or LayerNormalization over all non-batch axes of inputs of `rank`
    (`layer_norm`; Keras' default is the last axis only)."""
    if check_bn(bn) == "none":
        return None
    if bn == "group_norm":
        return layers.GroupNormalization(groups=GROUP_NORM_GROUPS, name=name)
    if bn == "layer_norm":
        if rank is None:
            raise ValueError("bn='layer_norm' needs the rank of its inputs (all non-batch "
                             "axes are normalized).")
        return layers.LayerNormalization(axis=list(range(1, rank)), name=name)
    cls = keras.layers.BatchNormalization if bn == "keras" else BatchNormalization
    return cls(name=name, **bn_options)


def normalized_relu(x, bn: str, name: str, placement: str, bn_options: Mapping[str, Any]):
    """BN then ReLU (or ReLU then BN); plain ReLU when bn="none"."""
    norm = make_bn(bn, f"{name}_bn", len(x.shape), **bn_options)
    if norm is not None and placement == "before_relu":
        x = norm(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    if norm is not None and placement == "after_relu":
        x = norm(x)
    return x
