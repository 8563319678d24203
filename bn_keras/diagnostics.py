"""BN diagnostics for TensorBoard: what BN does to a network while it trains.

`BNDiagnostics` writes, under `<logdir>/bn_diagnostics`, at the start of
training, at the end of every epoch and optionally every N steps (x-axis: the
optimizer's step count):

- `bn/<layer>/{gamma,beta,moving_mean,moving_variance}` histograms of each BN
  layer's weights (how the learned scale and shift and the running statistics
  drift);
- `grad_norm/<layer>` scalars: the L2 norm of the loss gradient with respect to
  each layer's weights, on a fixed probe batch (vanishing or exploding
  gradients show as norms shrinking or growing with depth);
- `preactivation_mean/<layer>` and `preactivation_std/<layer>` scalars, and
  `preactivation/<layer>` histograms, of the input to every ReLU on the probe
  batch (the "internal covariate shift" view: with BN they stay near 0 and 1,
  without BN they wander).

The probe runs in training mode, as the optimizer sees the network, and the
BN moving statistics it would update are restored afterwards, so diagnostics
never change training.
"""

from __future__ import annotations

import os

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


class BNDiagnostics(keras.callbacks.Callback):
    """Writes BN weight histograms, per-layer gradient norms and pre-activation statistics."""

    def __init__(self, logdir: str, probe_inputs, probe_labels, every_n_steps: int | None = None):
        super().__init__()
        self.logdir = os.path.join(logdir, "bn_diagnostics")
        self.probe_inputs = tf.convert_to_tensor(probe_inputs)
        self.probe_labels = tf.convert_to_tensor(probe_labels)
        self.every_n_steps = every_n_steps
        self._writer = None
        self._written_at = -1
        self._probe = None
        self._relus = []

    def set_model(self, model):
        super().set_model(model)
        if getattr(model, "inputs", None):  # a Functional or Sequential graph
            self._relus = relu_layers(model)
            outputs = [relu.input for relu in self._relus] + [model.outputs[0]]
            self._probe = keras.Model(model.inputs, outputs, name=f"{model.name}_probe")
        else:  # a subclassed model: no graph to tap, so no pre-activation statistics
            self._relus, self._probe = [], model

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.logdir)
        self.write()

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution Keras reports every k-th step only: write whenever
        # a multiple of every_n_steps has been passed since the last write.
        n = self.every_n_steps
        if n and self._step() // n > self._written_at // n:
            self.write()

    def on_epoch_end(self, epoch, logs=None):
        if self._step() != self._written_at:
            self.write()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def compute(self) -> dict[str, dict[str, np.ndarray]]:
        """The diagnostics as arrays: {"grad_norm": {layer: norm}, "preactivation": {relu: values}, ...}."""
        state = [v.numpy() for v in self.model.non_trainable_variables]
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        with tf.GradientTape() as tape:
            outputs = self._probe(self.probe_inputs, training=True)
            *preacts, logits = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            loss = loss_fn(self.probe_labels, tf.cast(logits, tf.float32))
        layers = [l for l in self.model.layers if l.trainable_weights]
        variables = [v for l in layers for v in l.trainable_weights]
        grads = dict(zip([id(v) for v in variables], tape.gradient(loss, variables)))
        for variable, value in zip(self.model.non_trainable_variables, state):
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
                              for relu, p in zip(self._relus, preacts)},
            "bn": {f"{layer.name}/{name}": getattr(layer, name).numpy()
                   for layer in self.model.layers if isinstance(layer, BN_TYPES)
                   for name in BN_WEIGHTS if getattr(layer, name) is not None},
        }

    def write(self) -> None:
        values = self.compute()
        step = self._written_at = self._step()
        # Keras' TensorBoard callback wraps training in record_if(its own batch counter
        # % update_freq == 0), which would drop most of these; record them regardless.
        with self._writer.as_default(step=step), tf.summary.record_if(True):
            for name, weights in values["bn"].items():
                tf.summary.histogram(f"bn/{name}", weights)
            for name, norm in values["grad_norm"].items():
                tf.summary.scalar(f"grad_norm/{name}", norm)
            for name, preact in values["preactivation"].items():
                tf.summary.scalar(f"preactivation_mean/{name}", float(preact.mean()))
                tf.summary.scalar(f"preactivation_std/{name}", float(preact.std()))
                tf.summary.histogram(f"preactivation/{name}", preact)
        self._writer.flush()


def read_scalars(logdir: str, prefix: str) -> dict[str, list[tuple[int, float]]]:
    """Reads back scalars a writer put under `logdir`: {tag without `prefix`: [(step, value)]}.

    For example `read_scalars(<tensorboard>/bn_diagnostics, "grad_norm/")` gives each
    layer's gradient norm over training.
    """
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(logdir, size_guidance={"tensors": 0})
    accumulator.Reload()
    return {tag[len(prefix):]: [(e.step, float(tf.make_ndarray(e.tensor_proto)))
                                for e in accumulator.Tensors(tag)]
            for tag in accumulator.Tags()["tensors"] if tag.startswith(prefix)}
