"""A layer's training step and inference call as plain functions, on any Keras backend.

Keras has no backend-neutral gradient, yet the proof (bn_keras.testing.equivalence)
and the benchmarks need the same training step on each backend: the forward
pass in training mode, the gradient of a loss with respect to the input and
the trainable weights, and the layer's moving-statistics update. Each backend
writes that step once (bn_keras.testing.harness: TensorFlow `tf.GradientTape`, JAX
`jax.grad` over a stateless call, PyTorch `torch.autograd`); `time_layers`
times it for several layers side by side.

`compiled=True` traces the step as the backend's trainers do (`tf.function`,
`jax.jit`; PyTorch runs eagerly, as Keras' torch trainer does by default).
`repeat=n` runs n steps per call: on TensorFlow in a loop inside the traced
function, so that its synchronous per-call cost (about 0.2 ms on CPU) does not
hide the layer's; JAX and PyTorch dispatch asynchronously, so there a Python
loop of calls already keeps the device busy, and the steps run one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from bn_keras.testing import harness
from bn_keras.testing.harness import TrainStep


def train_step(layer: keras.layers.Layer, mask=None, compiled: bool = False,
               repeat: int = 1, xla: bool = False) -> TrainStep:
    """A function running `repeat` training steps of `layer` on the same batch; it returns
    the last step's output and gradients (bn_keras.testing.harness.TrainStep). `xla`: compiled by
    XLA with the batch size unknown while tracing."""
    return harness.current().train_step(layer, mask, compiled, repeat, xla)


def infer_step(layer: keras.layers.Layer, mask=None, compiled: bool = False,
               repeat: int = 1, xla: bool = False) -> Callable[[Any], Any]:
    """A function calling `layer` in inference mode `repeat` times; it returns the last output."""
    return harness.current().infer_step(layer, mask, compiled, repeat, xla)


def time_layers(layers: dict[str, keras.layers.Layer], x, mask=None, rounds: int = 3,
                iterations: int = 10, repeat: int = 1, infer: bool = True,
                xla: bool = False) -> dict[tuple[str, str], float]:
    """Median milliseconds per compiled training step, `(name, "train")`, and inference call,
    `(name, "infer")`, of each built layer on the same input, measured in turn, round after
    round (bn_keras.testing.timing), `iterations` calls of `repeat` steps per measurement."""
    from bn_keras.testing import timing

    x = ops.convert_to_tensor(x)
    wait = harness.current().wait
    loss_weights = keras.random.normal(ops.shape(x), seed=0)

    def per_step_ms(call):
        return lambda: timing.seconds_per_call(call, iterations, sync=wait) / repeat * 1e3

    measures = {}
    for name, layer in layers.items():
        train = train_step(layer, mask, compiled=True, repeat=repeat, xla=xla)
        measures[(name, "train")] = per_step_ms(lambda t=train: t(x, loss_weights))
        if infer:
            call = infer_step(layer, mask, compiled=True, repeat=repeat, xla=xla)
            measures[(name, "infer")] = per_step_ms(lambda f=call: f(x))
    return timing.interleaved_medians(measures, rounds)
