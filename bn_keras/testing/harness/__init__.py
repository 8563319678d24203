"""What the proof and the benchmarks run on each Keras backend, beside what the layer needs.

The layer's runtime (kernels, replicas) is bn_keras.backends; this is the harness
around it, kept apart as Keras keeps a backend's kernels apart from its trainer: a
layer's training step with its gradients, an inference call, waiting for an
asynchronous device, and the device's name. Each module here defines one `HARNESS`
satisfying `Harness`; `current()` returns the one for the backend Keras runs on.
"""

from __future__ import annotations

import importlib
import platform
from collections.abc import Callable
from typing import Any, Protocol

import keras

from bn_keras.backends import OWN_MODULES

# step(x, loss_weights) -> (y, {"input": dL/dx, "<weight name>": dL/dw, ...}), with
# L = sum(float32(y) * loss_weights); the layer's moving statistics are updated.
TrainStep = Callable[[Any, Any], tuple[Any, dict[str, Any]]]
InferStep = Callable[[Any], Any]


class Harness(Protocol):
    """The steps the proof and the benchmarks run on one Keras backend."""

    name: str

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


def current() -> Harness:
    """The Harness of the backend Keras runs on (`general`: one without gradients)."""
    name = keras.config.backend()
    module = name if name in OWN_MODULES else "general"
    return importlib.import_module(f"{__name__}.{module}").HARNESS


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
