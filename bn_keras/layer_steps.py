"""A layer's training step and inference call as plain functions, on any Keras backend.

Keras has no backend-neutral gradient, yet the proof (`bn_keras.equivalence`)
and the benchmarks need the same training step on each backend: the forward
pass in training mode, the gradient of a loss with respect to the input and
the trainable weights, and the layer's moving-statistics update. This module
writes that step once per backend (TensorFlow: `tf.GradientTape`; JAX:
`jax.grad` over a stateless call; PyTorch: `torch.autograd`), and
`time_layers` times it for several layers side by side.

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

# step(x, loss_weights) -> (y, {"input": dL/dx, "<weight name>": dL/dw, ...}), with
# L = sum(float32(y) * loss_weights); the layer's moving statistics are updated.
TrainStep = Callable[[Any, Any], tuple[Any, dict[str, Any]]]


def train_step(layer: keras.layers.Layer, mask=None, compiled: bool = False,
               repeat: int = 1) -> TrainStep:
    """A function running `repeat` training steps of `layer` on the same batch; it returns
    the last step's output and gradients."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        step = _tensorflow_train_step(layer, mask)
        if compiled:
            import tensorflow as tf

            return tf.function(_repeated(step, repeat, in_graph=True))
    elif backend == "jax":
        step = _jax_train_step(layer, mask, compiled)
    else:
        step = _torch_train_step(layer, mask)
    return _repeated(step, repeat, in_graph=False)


def infer_step(layer: keras.layers.Layer, mask=None, compiled: bool = False,
               repeat: int = 1) -> Callable[[Any], Any]:
    """A function calling `layer` in inference mode `repeat` times; it returns the last output."""
    backend = keras.config.backend()
    if backend == "jax":
        return _repeated(_jax_infer_step(layer, mask, compiled), repeat, in_graph=False)

    def infer(x):
        return layer(x, training=False, mask=mask)

    if backend == "tensorflow" and compiled:
        import tensorflow as tf

        return tf.function(_repeated(infer, repeat, in_graph=True))
    if backend == "torch":
        import torch

        infer = torch.no_grad()(infer)
    return _repeated(infer, repeat, in_graph=False)


def time_layers(layers: dict[str, keras.layers.Layer], x, mask=None, rounds: int = 3,
                iterations: int = 10, repeat: int = 1,
                infer: bool = True) -> dict[tuple[str, str], float]:
    """Median milliseconds per compiled training step, `(name, "train")`, and inference call,
    `(name, "infer")`, of each built layer on the same input, measured in turn, round after
    round (`bn_keras.timing`), `iterations` calls of `repeat` steps per measurement."""
    from bn_keras import timing

    x = ops.convert_to_tensor(x)
    loss_weights = keras.random.normal(ops.shape(x), seed=0)

    def per_step_ms(call):
        return lambda: timing.seconds_per_call(call, iterations, sync=wait) / repeat * 1e3

    measures = {}
    for name, layer in layers.items():
        train = train_step(layer, mask, compiled=True, repeat=repeat)
        measures[(name, "train")] = per_step_ms(lambda t=train: t(x, loss_weights))
        if infer:
            call = infer_step(layer, mask, compiled=True, repeat=repeat)
            measures[(name, "infer")] = per_step_ms(lambda f=call: f(x))
    return timing.interleaved_medians(measures, rounds)


def wait(result) -> None:
    """Blocks until the device has computed `result` (for timing asynchronous backends)."""
    backend = keras.config.backend()
    leaves = [t for t in keras.tree.flatten(result) if t is not None]
    if backend == "jax":
        import jax

        jax.block_until_ready(leaves)
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    else:
        min(leaves, key=lambda t: int(ops.size(t))).numpy()


def _repeated(fn, repeat, in_graph):
    """fn called `repeat` times on the same arguments, returning the last result; with
    `in_graph`, the loop is a `tf.range` loop that a `tf.function` keeps in its graph."""
    if repeat == 1:
        return fn

    def repeated(*args):
        result = fn(*args)
        if in_graph:
            import tensorflow as tf

            for _ in tf.range(repeat - 1):
                result = fn(*args)
        else:
            for _ in range(repeat - 1):
                result = fn(*args)
        return result

    return repeated


def _weight_names(layer) -> list[str]:
    return [v.name for v in layer.trainable_variables]


def _loss(y, loss_weights):
    return ops.sum(ops.cast(y, "float32") * loss_weights)


def _tensorflow_train_step(layer, mask):
    import tensorflow as tf

    def step(x, loss_weights):
        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True, mask=mask)
            loss = _loss(y, loss_weights)
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        return y, dict(zip(["input"] + _weight_names(layer), grads, strict=True))

    return step


def _torch_train_step(layer, mask):
    import torch

    mask = None if mask is None else ops.convert_to_tensor(mask)

    def step(x, loss_weights):
        x = ops.convert_to_tensor(x).detach().requires_grad_(True)
        y = layer(x, training=True, mask=mask)
        grads = torch.autograd.grad(_loss(y, ops.convert_to_tensor(loss_weights)),
                                    [x] + [v.value for v in layer.trainable_variables])
        return y.detach(), dict(zip(["input"] + _weight_names(layer), grads, strict=True))

    return step


def _jax_stateless(layer, trainable, non_trainable, call):
    """Runs `call()` with the layer's variables set to the given values; returns its result
    and the non-trainable variables' new values."""
    mapping = list(zip(layer.trainable_variables, trainable, strict=True))
    mapping += list(zip(layer.non_trainable_variables, non_trainable, strict=True))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        result = call()
    return result, [scope.get_current_value(v) for v in layer.non_trainable_variables]


def _jax_train_step(layer, mask, compiled):
    import jax

    def loss(trainable, non_trainable, x, loss_weights):
        y, non_trainable = _jax_stateless(layer, trainable, non_trainable,
                                          lambda: layer(x, training=True, mask=mask))
        return _loss(y, loss_weights), (y, non_trainable)

    gradient = jax.grad(loss, argnums=(0, 2), has_aux=True)
    gradient = jax.jit(gradient) if compiled else gradient

    def step(x, loss_weights):
        (d_trainable, d_x), (y, non_trainable) = gradient(
            [v.value for v in layer.trainable_variables],
            [v.value for v in layer.non_trainable_variables],
            ops.convert_to_tensor(x), ops.convert_to_tensor(loss_weights))
        for variable, value in zip(layer.non_trainable_variables, non_trainable, strict=True):
            variable.assign(value)
        return y, dict(zip(["input"] + _weight_names(layer), [d_x, *d_trainable], strict=True))

    return step


def _jax_infer_step(layer, mask, compiled):
    import jax

    def infer(trainable, non_trainable, x):
        y, _ = _jax_stateless(layer, trainable, non_trainable,
                              lambda: layer(x, training=False, mask=mask))
        return y

    infer = jax.jit(infer) if compiled else infer
    return lambda x: infer([v.value for v in layer.trainable_variables],
                           [v.value for v in layer.non_trainable_variables],
                           ops.convert_to_tensor(x))
