"""What our BatchNormalization, and the proof of it, do differently on each Keras backend.

The layer (bn_keras.layers) spells out BN's four formulas once, in `keras.ops`, and
they run on every backend. A backend may add a fast path beside them: a `Kernel`
computing plain BN with its own kernels. It also says how replicas are counted and
their sums reduced, and provides what the proof and the benchmarks (bn_keras.testing)
run: a layer's training step with its gradients, an inference call, and the name of
the device it computes on.

Each module here defines one `BACKEND` that satisfies `Backend`; `current()` returns
the one for the backend Keras runs on, `general` where there is none. Adding a backend
is one module and one line in `_LOADERS`; tests/test_backend_contract.py checks every
installed backend against this contract.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any, Protocol

import keras

# step(x, loss_weights) -> (y, {"input": dL/dx, "<weight name>": dL/dw, ...}), with
# L = sum(float32(y) * loss_weights); the layer's moving statistics are updated.
TrainStep = Callable[[Any, Any], tuple[Any, dict[str, Any]]]
InferStep = Callable[[Any], Any]


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
    """Everything our layer and its proof need to know about one Keras backend."""

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

    def train_step(self, layer: keras.layers.Layer, mask=None, compiled: bool = False,
                   repeat: int = 1, xla: bool = False) -> TrainStep:
        """`repeat` training steps of `layer` on the same batch per call (see `TrainStep`),
        traced as the backend's trainer would with `compiled`; returns the last step's.
        `xla`: compiled by XLA, traced with the batch size unknown, as Keras' trainer
        traces it (NotImplementedError where the backend has no XLA)."""
        ...

    def infer_step(self, layer: keras.layers.Layer, mask=None, compiled: bool = False,
                   repeat: int = 1, xla: bool = False) -> InferStep:
        """`repeat` inference-mode calls of `layer` per call; returns the last output."""
        ...

    def wait(self, result) -> None:
        """Blocks until the device has computed `result` (timing asynchronous backends)."""
        ...

    def device_name(self) -> str:
        """The accelerator's own name ('NVIDIA H200') where the backend uses one, else
        'CPU (...)'."""
        ...


def _tensorflow() -> Backend:
    from bn_keras.backends.tensorflow import BACKEND

    return BACKEND


def _torch() -> Backend:
    from bn_keras.backends.torch import BACKEND

    return BACKEND


def _jax() -> Backend:
    from bn_keras.backends.jax import BACKEND

    return BACKEND


def _general() -> Backend:
    from bn_keras.backends.general import BACKEND

    return BACKEND


# Keras backend name -> its Backend (imported on first use: torch and TensorFlow must
# not be imported where Keras runs on another backend).
_LOADERS: dict[str, Callable[[], Backend]] = {
    "tensorflow": _tensorflow, "torch": _torch, "jax": _jax}


def current() -> Backend:
    """The Backend of the backend Keras runs on (`general` for one without its own)."""
    return _LOADERS.get(keras.config.backend(), _general)()


def cpu_name() -> str:
    return f"CPU ({platform.processor() or platform.machine()})"


def loss(y, loss_weights):
    """The scalar every TrainStep differentiates: sum(float32(y) * loss_weights)."""
    return keras.ops.sum(keras.ops.cast(y, "float32") * loss_weights)


def weight_names(layer: keras.layers.Layer) -> list[str]:
    """The keys of a TrainStep's gradients besides "input", in the layer's order."""
    return [v.name for v in layer.trainable_variables]


def repeated(fn: Callable, repeat: int, loop: Callable[[int], Any] = range) -> Callable:
    """`fn` called `repeat` times on the same arguments, returning the last result; `loop`
    makes the loop (`tf.range` keeps it inside a traced graph)."""
    if repeat == 1:
        return fn

    def call(*args):
        result = fn(*args)
        for _ in loop(repeat - 1):
            result = fn(*args)
        return result

    return call
