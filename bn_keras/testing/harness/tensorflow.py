"""TensorFlow: steps with tf.GradientTape, compiled with tf.function (and XLA)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from bn_keras.testing.harness import cpu_name, loss, repeated, weight_names


class TensorFlowHarness:
    """Steps with tf.GradientTape; the GPU's name where there is one."""

    name = "tensorflow"

    def train_step(self, layer, mask=None, compiled=False, repeat=1, xla=False):
        def step(x, loss_weights):
            x = tf.convert_to_tensor(x)
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True, mask=mask)
                value = loss(y, loss_weights)
            grads = tape.gradient(value, [x] + layer.trainable_variables)
            return y, dict(zip(["input"] + weight_names(layer), grads, strict=True))

        return self._traced(step, compiled, repeat, xla)

    def infer_step(self, layer, mask=None, compiled=False, repeat=1, xla=False):
        return self._traced(lambda x: layer(x, training=False, mask=mask), compiled, repeat,
                            xla)

    @staticmethod
    def _traced(fn, compiled, repeat, xla):
        # Compiled, the steps loop inside the traced graph, so that the synchronous
        # per-call cost (about 0.2 ms on CPU) does not hide the layer's.
        if xla:
            return _traced_with_unknown_batch(repeated(fn, repeat, loop=tf.range))
        if compiled:
            return tf.function(repeated(fn, repeat, loop=tf.range))
        return repeated(fn, repeat)

    def wait(self, result) -> None:
        leaves = [t for t in tf.nest.flatten(result) if t is not None]
        min(leaves, key=lambda t: int(tf.size(t))).numpy()

    def device_name(self) -> str:
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        return cpu_name()


def _traced_with_unknown_batch(fn):
    """`fn` compiled by XLA, traced on its first call with every argument's batch size
    unknown, as Keras traces its training step (`reduce_retracing`)."""
    traced = []

    def call(*args):
        if not traced:
            signature = [tf.TensorSpec((None, *np.shape(a)[1:]), tf.as_dtype(a.dtype))
                         for a in args]
            traced.append(tf.function(fn, jit_compile=True, input_signature=signature))
        return traced[0](*args)

    return call


HARNESS = TensorFlowHarness()
