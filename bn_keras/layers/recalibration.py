"""Re-estimating BN's moving statistics for a model's current weights ("precise BN").

During training the moving statistics lag behind the weights: they average the
statistics of many earlier versions of the network. After training (or for weights
averaged over time, such as an EMA), `recalibrate_batch_norm` replaces them with the
statistics the current weights give on training data, as fvcore's `update_bn_stats`
and `torch.optim.swa_utils.update_bn` do (Ioffe & Szegedy 2015, Algorithm 2; Wu &
Johnson 2021). Works for our layer and for `keras.layers.BatchNormalization`, on every
Keras backend, in Functional, Sequential and nested models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Iterator

import keras
import numpy as np

from bn_keras.errors import InvalidSetting
from bn_keras.layers.batch_normalization import batch_norm_layers


@dataclasses.dataclass(frozen=True)
class Recalibration:
    """What `recalibrate_batch_norm` used: batches and examples of the data, and the BN
    layers whose statistics it re-estimated (by name)."""

    batches: int
    examples: int
    layers: tuple[str, ...]


def recalibrate_batch_norm(model: keras.Model, data, num_batches: int | None = None,
                           batch_size: int = 32) -> Recalibration:
    """Sets every trainable BN layer's moving mean and variance to the statistics the
    model's current weights give on `data`, changing no weight.

    - One training-mode forward pass of the whole model per batch (not layer by
      layer), so each layer sees the inputs the layers before it produce.
    - Each layer's moving mean becomes the mean of its batch means, its moving variance
      the mean of its batch variances, both weighted by batch size (a short last batch
      counts for what it holds). The variance is the biased one, Keras' convention for
      `moving_variance` (Algorithm 2 and fvcore use the unbiased one). Ghost BN layers
      average their groups by size, as in training.
    - Layers with `trainable=False` (frozen, in inference mode) keep their statistics;
      batch renorm's `renorm_mean` and `renorm_stddev` are left as they are.
    - Under a tf.distribute strategy, the model runs on each whole batch in
      cross-replica context: every layer gets the statistics of all the batch.

    `data`: what `fit` accepts, without augmentation (the training images, as they are):
    a tf.data.Dataset or any iterable of batches (`x` or `(x, y, ...)`), or an array
    (or a tuple whose first element is one) cut into batches of `batch_size`.
    `num_batches`: the first N batches only (all by default). Returns what was used
    (`Recalibration`).
    """
    layers = [layer for layer in batch_norm_layers(model) if layer.trainable]
    forward = _training_forward(model)
    sums = {id(layer): [0.0, 0.0] for layer in layers}
    batches = examples = 0
    with _statistics_of_each_batch(layers):
        for x in _batches(data, num_batches, batch_size):
            for layer in layers:
                _zero(layer)  # with momentum 0, the moving statistics become the batch's
            forward(x)
            size = _batch_size(x)
            for layer in layers:
                mean, variance = (keras.ops.convert_to_numpy(v).astype(np.float64)
                                  for v in (layer.moving_mean, layer.moving_variance))
                sums[id(layer)][0] = sums[id(layer)][0] + size * mean
                sums[id(layer)][1] = sums[id(layer)][1] + size * variance
            batches, examples = batches + 1, examples + size
    if batches == 0:
        raise InvalidSetting("recalibrate_batch_norm: `data` holds no batch.")
    for layer in layers:
        mean, variance = (total / examples for total in sums[id(layer)])
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
        if getattr(layer, "renorm", False):
            layer.moving_stddev.assign(np.sqrt(variance + layer.epsilon).astype(np.float32))
    return Recalibration(batches, examples, tuple(layer.name for layer in layers))


@contextlib.contextmanager
def _statistics_of_each_batch(layers) -> Iterator[None]:
    """Momentum 0 (the moving statistics become each batch's own), renorm's statistics
    frozen (renorm momentum 1), and everything as it was afterwards but the moving mean
    and variance."""
    saved = [(layer, layer.momentum, getattr(layer, "renorm_momentum", None),
              [keras.ops.convert_to_numpy(v) for v in _renorm_statistics(layer)])
             for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
            if getattr(layer, "renorm", False):
                layer.renorm_momentum = 1.0
        yield
    finally:
        for layer, momentum, renorm_momentum, values in saved:
            layer.momentum = momentum
            if renorm_momentum is not None:
                layer.renorm_momentum = renorm_momentum
            for variable, value in zip(_renorm_statistics(layer), values, strict=True):
                variable.assign(value)


def _renorm_statistics(layer) -> list:
    if not getattr(layer, "renorm", False):
        return []
    return [layer.renorm_mean, layer.renorm_stddev]


def _zero(layer) -> None:
    for variable in (layer.moving_mean, layer.moving_variance):
        variable.assign(np.zeros(variable.shape, np.float32))
    if getattr(layer, "renorm", False):
        layer.moving_stddev.assign(np.zeros(layer.moving_stddev.shape, np.float32))


def _training_forward(model: keras.Model):
    """model(x, training=True), traced once on TensorFlow (the momenta it reads stay 0 for
    the whole pass), eager elsewhere; no gradient kept."""
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: model(x, training=True), reduce_retracing=True)
    if keras.config.backend() == "torch":
        import torch

        return torch.no_grad()(lambda x: model(x, training=True))
    return lambda x: model(x, training=True)


def _batches(data, num_batches: int | None, batch_size: int) -> Iterable:
    """The model inputs of each batch of `data` (see recalibrate_batch_norm)."""
    if num_batches is not None and num_batches < 1:
        raise InvalidSetting(f"num_batches must be at least 1, got {num_batches}.")
    if isinstance(data, tuple) and data and hasattr(data[0], "shape"):
        data = data[0]
    if hasattr(data, "shape"):  # an array: cut into batches
        count = math.ceil(len(data) / batch_size)
        source: Iterable = (data[i * batch_size:(i + 1) * batch_size] for i in range(count))
    else:
        source = (batch[0] if isinstance(batch, (tuple, list)) else batch for batch in data)
    for i, x in enumerate(source):
        if num_batches is not None and i >= num_batches:
            return
        yield x


def _batch_size(x) -> int:
    first = keras.tree.flatten(x)[0]
    return int(keras.ops.shape(first)[0])
