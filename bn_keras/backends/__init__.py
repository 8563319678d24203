"""What our BatchNormalization does differently on each Keras backend.

The layer (bn_keras.layers) spells out BN's four formulas once, in `keras.ops`, and
they run on every backend. A backend may add a fast path beside them: a `Kernel`
computing plain BN with its own kernels. It also says how replicas are counted and
their sums reduced. That is all the layer needs: what the proof and the benchmarks
need besides (a training step with its gradients, an inference call, the device's
name) is their harness, bn_keras.testing.harness, kept apart as Keras keeps a
backend's kernels apart from its trainer.

Each module here defines one `BACKEND` that satisfies `Backend`; `current()` returns
the one for the backend Keras runs on, `general` where there is none. Adding a backend
is one module and one line in `_LOADERS`; tests/backends/test_backend_contract.py
checks every installed backend against this contract.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import keras


class Kernel(Protocol):
    """A backend's own computation of plain BN (no mask, renorm, ghost batches or
    cross-replica reduction). `gamma` and `beta` may be None (`scale=False`,
    `center=False`); `y` may have the input's dtype or float32 (the layer casts it)."""

    def batch_norm(self, x, gamma, beta, epsilon: float, channel_axis: int
                   ) -> tuple[Any, Any, Any]:
        """Training mode: (y, mean, variance) of `x` normalized with its own statistics;
        the variance is the biased one, which Keras' moving average takes."""
        ...

    def normalize(self, x, mean, variance, gamma, beta, epsilon: float,
                  channel_axis: int) -> Any:
        """Inference mode, with the given (moving) statistics."""
        ...


class Backend(Protocol):
    """Everything our layer needs to know about one Keras backend."""

    name: str

    def kernel(self, x, channel_axis: int, epsilon: float, training: bool) -> Kernel | None:
        """The fast path's kernel for plain BN of `x`, or None where the layer's general
        path computes it. The one place a backend chooses among its kernels."""
        ...

    def replicas_in_sync(self) -> int:
        """How many replicas each hold part of the batch right now."""
        ...

    def sum_over_replicas(self, t) -> Any:
        """`t` summed over those replicas."""
        ...


# Keras backends with a module of their own here; any other takes `general`.
OWN_MODULES = ("tensorflow", "torch", "jax")


def current() -> Backend:
    """The Backend of the backend Keras runs on (`general` for one without its own). Each
    module is imported on first use: torch and TensorFlow must not be imported where
    Keras runs on another backend."""
    name = keras.config.backend()
    module = name if name in OWN_MODULES else "general"
    return importlib.import_module(f"{__name__}.{module}").BACKEND
