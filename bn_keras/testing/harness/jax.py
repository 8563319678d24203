"""JAX: steps with jax.grad (and jax.jit when compiled).

Keras' variables are stateful and jax.grad is not: a step runs the layer in a
`keras.StatelessScope` on the variables' values and writes the new moving
statistics back after it.
"""

from __future__ import annotations

import jax
import keras

from bn_keras.testing.harness import cpu_name, loss, repeated, weight_names


class JaxHarness:
    """Training steps through jax.grad, and the accelerator's name."""

    name = "jax"
    def train_step(self, layer, mask=None, compiled=False, repeat=1, xla=False):
        compiled = compiled or xla  # jax.jit is XLA
        def value(trainable, non_trainable, x, loss_weights):
            y, non_trainable = _stateless(layer, trainable, non_trainable,
                                          lambda: layer(x, training=True, mask=mask))
            return loss(y, loss_weights), (y, non_trainable)

        gradient = jax.grad(value, argnums=(0, 2), has_aux=True)
        gradient = jax.jit(gradient) if compiled else gradient

        def step(x, loss_weights):
            (d_trainable, d_x), (y, non_trainable) = gradient(
                [v.value for v in layer.trainable_variables],
                [v.value for v in layer.non_trainable_variables],
                keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(loss_weights))
            for variable, new in zip(layer.non_trainable_variables, non_trainable, strict=True):
                variable.assign(new)
            return y, dict(zip(["input"] + weight_names(layer), [d_x, *d_trainable],
                               strict=True))

        # JAX dispatches asynchronously: a Python loop of calls keeps the device busy.
        return repeated(step, repeat)

    def infer_step(self, layer, mask=None, compiled=False, repeat=1, xla=False):
        compiled = compiled or xla

        def infer(trainable, non_trainable, x):
            y, _ = _stateless(layer, trainable, non_trainable,
                              lambda: layer(x, training=False, mask=mask))
            return y

        infer = jax.jit(infer) if compiled else infer
        return repeated(lambda x: infer([v.value for v in layer.trainable_variables],
                                        [v.value for v in layer.non_trainable_variables],
                                        keras.ops.convert_to_tensor(x)), repeat)

    def wait(self, result) -> None:
        jax.block_until_ready([t for t in keras.tree.flatten(result) if t is not None])

    def device_name(self) -> str:
        device = jax.devices()[0]
        return device.device_kind if device.platform != "cpu" else cpu_name()


def _stateless(layer, trainable, non_trainable, call):
    """Runs `call()` with the layer's variables set to the given values; returns its result
    and the non-trainable variables' new values."""
    mapping = list(zip(layer.trainable_variables, trainable, strict=True))
    mapping += list(zip(layer.non_trainable_variables, non_trainable, strict=True))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        result = call()
    return result, [scope.get_current_value(v) for v in layer.non_trainable_variables]


HARNESS = JaxHarness()
