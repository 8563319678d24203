"""What BN does to a network, measured on a fixed probe batch.

`probe(model, x, y)` runs one forward and backward pass in training mode, as
the optimizer sees the network, and returns:

- `grad_norm`: {layer: L2 norm of the loss gradient with respect to the layer's
  weights} (vanishing or exploding gradients show as norms shrinking or growing
  with depth); `gradient_norms(model, x, y)` returns only these;
- `preactivation`: {ReLU layer: the values entering it} (the "internal covariate
  shift" view: with BN before the ReLU they stay near mean 0 and std 1, without
  BN they wander as earlier layers change);
- `bn`: {"<layer>/<weight>": values} of each BN layer's gamma, beta and moving
  statistics.

The BN moving statistics that the training-mode pass would update are
restored afterwards, so a probe never changes training.
`bn_keras.train.callbacks.BNDiagnostics` writes these to TensorBoard during training;
`bn_keras.train.events.read_scalars` reads them back.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bn_keras.layers import BN_TYPES

BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def relu_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's ReLU layers (keras.layers.ReLU or Activation("relu")), in order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.ReLU):
            found.append(layer)
        elif isinstance(layer, keras.layers.Activation) and getattr(
                layer.activation, "__name__", "") == "relu":
            found.append(layer)
    return found


class Probe:
    """A model's outputs plus the inputs of its ReLUs, for repeated probing."""

    def __init__(self, model: keras.Model):
        self.model = model
        if getattr(model, "inputs", None):  # a Functional or Sequential graph
            self.relus = relu_layers(model)
            outputs = [relu.input for relu in self.relus] + [model.outputs[0]]
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            self._network = keras.Model(inputs, outputs, name=f"{model.name}_probe")
        else:  # a subclassed model: no graph to tap, so no pre-activation statistics
            self.relus, self._network = [], model

    def __call__(self, x, y) -> dict[str, dict[str, Any]]:
        model = self.model
        state = [v.numpy() for v in model.non_trainable_variables]
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        with tf.GradientTape() as tape:
            outputs = self._network(x, training=True)
            *preacts, logits = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            loss = loss_fn(y, tf.cast(logits, tf.float32))
        layers = [layer for layer in model.layers if layer.trainable_weights]
        variables = [v for layer in layers for v in layer.trainable_weights]
        grads = dict(zip([id(v) for v in variables], tape.gradient(loss, variables), strict=True))
        for variable, value in zip(model.non_trainable_variables, state, strict=True):
            variable.assign(value)  # the probe's BN updates must not leak into training
        grad_norms = {}
        for layer in layers:
            squares = [tf.reduce_sum(tf.square(tf.cast(grads[id(v)], tf.float32)))
                       for v in layer.trainable_weights if grads[id(v)] is not None]
            if squares:
                grad_norms[layer.name] = float(tf.sqrt(tf.add_n(squares)))
        return {
            "grad_norm": grad_norms,
            "preactivation": {relu.name: tf.cast(p, tf.float32).numpy()
                              for relu, p in zip(self.relus, preacts, strict=True)},
            "bn": {f"{layer.name}/{name}": np.asarray(getattr(layer, name))
                   for layer in model.layers if isinstance(layer, BN_TYPES)
                   for name in BN_WEIGHTS if getattr(layer, name) is not None},
        }


def probe(model: keras.Model, x, y) -> dict[str, dict[str, Any]]:
    """Gradient norms, ReLU inputs and BN weights on the batch (x, y); see the module doc."""
    return Probe(model)(x, y)


def gradient_norms(model: keras.Model, x, y) -> dict[str, float]:
    """{layer: ||dL/dW||} on the batch (x, y), in training mode, leaving the model unchanged."""
    return probe(model, x, y)["grad_norm"]
