"""What our BatchNormalization does differently on each Keras backend.

The layer (`bn_keras.layers`) spells out BN's four formulas once, in
`keras.ops`, and they run on every backend. A backend module here may add a
fast path beside them, and says how replicas are counted and their sums
reduced. Each module offers the same five functions:

    takes(x, channel_axis, epsilon, training) -> bool
        Whether its fast path computes BN for `x`. The layer asks only for
        plain BN: no mask, renorm, ghost batches or cross-replica reduction.
    batch_norm(x, gamma, beta, epsilon, channel_axis) -> (y, mean, variance)
        Training mode: `x` normalized with its own statistics, which are
        returned too (variance biased, as Keras' moving average takes it).
    normalize(x, mean, variance, gamma, beta, epsilon, channel_axis) -> y
        Inference mode, with the given (moving) statistics.
    replicas_in_sync() -> int
        How many replicas each hold part of the batch right now.
    sum_over_replicas(t) -> t
        `t` summed over those replicas.

`gamma` and `beta` may be None (`scale=False`, `center=False`); `y` may have
the input's dtype or float32, and the layer casts it to its compute dtype.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import keras

_MODULES = {"tensorflow": "tensorflow", "torch": "torch"}


def current() -> ModuleType:
    """The module for the backend Keras runs on; `general` where there is no fast path."""
    name = _MODULES.get(keras.config.backend(), "general")
    return importlib.import_module(f"bn_keras.backends.{name}")
