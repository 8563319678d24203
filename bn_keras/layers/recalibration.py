"""Re-estimating BN's moving statistics for a model's current weights ("precise BN").

During training the moving statistics lag behind the weights: they average the
statistics of many earlier versions of the network. After training (or for weights
averaged over time, such as an EMA), `recalibrate_batch_norm` replaces them with the
statistics the current weights give on training data (Ioffe & Szegedy 2015,
Algorithm 2; Wu & Johnson 2021). Works for our layer and for
`keras.layers.BatchNormalization`, on every Keras backend, in Functional, Sequential,
nested and subclassed models.

The variance, two conventions (`variance=`):

- "batch" (the default): the mean of the biased batch variances, batches weighted by
  size: what Keras' moving average converges to, so re-estimated statistics replace the
  moving ones like for like. For i.i.d. inputs with m values per channel per batch it is
  (1 - 1/m) of the population variance (0.5x at m = 2, 0.9x at m = 10).
- "population": the variance of all the values a layer normalizes over the data, the
  spread between batch means included (the mean of the biased batch variances plus the
  variance of the batch means, batches weighted by size): what fvcore's
  `update_bn_stats` computes (its `_PopulationVarianceEstimator`). For Ghost BN, over all
  its groups: the spread between the groups' means is included too.

(`torch.optim.swa_utils.update_bn`, and fvcore's earlier code, are a third: the mean of
the unbiased batch variances, every batch weighted equally whatever its size.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np

from bn_keras.errors import InvalidSetting
from bn_keras.layers.batch_normalization import batch_norm_layers

log = logging.getLogger(__name__)

VARIANCES = ("batch", "population")


@dataclasses.dataclass(frozen=True)
class Recalibration:
    """What `recalibrate_batch_norm` did: the batches and examples of the data it used,
    the BN layers whose statistics it re-estimated (by name), the variance convention, and
    the trainable BN layers it kept as they were, each with the reason."""

    batches: int
    examples: int
    layers: tuple[str, ...]
    variance: str = "batch"
    kept: dict[str, str] = dataclasses.field(default_factory=dict)


def recalibrate_batch_norm(model: keras.Model, data, num_batches: int | None = None,
                           batch_size: int = 32, variance: str = "batch") -> Recalibration:
    """Sets every trainable BN layer's moving mean and variance to the statistics the
    model's current weights give on `data`, changing no weight.

    - One training-mode forward pass of the whole model per batch (not layer by
      layer), so each layer sees the inputs the layers before it produce.
    - Each layer's moving mean becomes the mean of its batch means, weighted by batch
      size (a short last batch counts for what it holds); its moving variance follows
      `variance` ("batch" or "population", see the module docstring). Ghost BN layers
      average their groups by size, as in training.
    - Layers with `trainable=False` (frozen, in inference mode) keep their statistics;
      batch renorm's `renorm_mean` and `renorm_stddev` are left as they are.
    - A BN layer that one forward pass calls more than once (shared between two places)
      or never in training mode keeps its statistics, and `kept` says why: there are no
      statistics of its own to re-estimate.
    - Under a tf.distribute strategy, the model runs on each whole batch in
      cross-replica context: every layer gets the statistics of all the batch.

    If anything fails on the way (a batch that raises, Ctrl-C), the model is left exactly
    as it was. Refused, in one line, before anything changes: `data` of no batch, a batch
    giving a layer one value per channel (its variance would be 0), and bad arguments.

    `data`: what `fit` accepts, without augmentation (the training images, as they are):
    a tf.data.Dataset or any iterable of batches (a list of arrays is one; each batch `x`,
    `(x, y, ...)` or `[x, y]`, `x` an array or a dict of them), or an array (or a dict of
    them, or a tuple whose first element is one: `(x, y)`) cut into batches of
    `batch_size`. `num_batches`: the first N batches only (all by default).
    """
    layers = [layer for layer in batch_norm_layers(model) if layer.trainable]
    _check_arguments(data, num_batches, batch_size, variance)
    if not layers:
        log.info("recalibrate_batch_norm: %s has no trainable BN layer; nothing to do.",
                 model.name)
        return Recalibration(0, 0, (), variance)
    forward = _training_forward(model)
    sums: dict[int, np.ndarray] = {}
    batches = examples = 0
    kept: dict[str, str] = {}
    with _kept_as_they_were(layers) as restore, _statistics_of_each_batch(layers, variance):
        for x in _batches(data, num_batches, batch_size):
            for layer in layers:
                _zero(layer)  # with momentum 0, the moving statistics become the batch's
            if batches == 0:
                with _counting_calls(layers) as seen:
                    forward(x)
                kept = _without_statistics_of_their_own(seen, layers)
                layers = [layer for layer in layers if layer.name not in kept]
            else:
                forward(x)
            size = _batch_size(x)
            for layer in layers:
                _check_values_per_channel(layer, seen[id(layer)].values_per_example, size,
                                          batches)
                mean, var = (keras.ops.convert_to_numpy(v).astype(np.float64)
                             for v in (layer.moving_mean, layer.moving_variance))
                # Per layer: sum of n * (mean, variance, mean^2) over the batches.
                sums[id(layer)] = sums.get(id(layer), 0.0) + size * np.stack(
                    [mean, var, mean * mean])
            batches, examples = batches + 1, examples + size
        if batches == 0:
            raise InvalidSetting("recalibrate_batch_norm: `data` holds no batch.")
        restore(kept)  # the passes moved them too
        for name, reason in kept.items():
            log.warning("recalibrate_batch_norm: %s keeps its statistics (%s).", name, reason)
        for layer in layers:
            mean, var, square = sums[id(layer)] / examples
            if variance == "population":  # plus the spread between the batch means
                var = var + np.maximum(square - mean * mean, 0.0)
            _assign(layer, mean, var)
    return Recalibration(batches, examples, tuple(layer.name for layer in layers), variance,
                         kept)


def _check_arguments(data, num_batches, batch_size, variance) -> None:
    if variance not in VARIANCES:
        raise InvalidSetting(f"recalibrate_batch_norm: variance={variance!r} is not one of "
                             f"{', '.join(VARIANCES)}.")
    for name, value, allowed_none in (("num_batches", num_batches, True),
                                      ("batch_size", batch_size, False)):
        if value is None and allowed_none:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InvalidSetting(f"recalibrate_batch_norm: {name}={value!r} must be a whole "
                                 f"number of at least 1{' (or None: all)' * allowed_none}.")
    if data is None or isinstance(data, (str, bytes)):
        raise InvalidSetting(
            f"recalibrate_batch_norm: data={data!r:.40} holds no images; pass the training "
            "inputs as `fit` takes them (an array, a tf.data.Dataset or batches).")


@dataclasses.dataclass
class _Calls:
    """What one forward pass did with a BN layer: training-mode calls, and the values per
    channel one example gives it (the product of its non-channel, non-batch axes)."""

    training: int = 0
    values_per_example: int = 1


@contextlib.contextmanager
def _counting_calls(layers) -> Iterator[dict[int, _Calls]]:
    """Counts each layer's training-mode calls (traced calls, on TensorFlow) inside."""
    seen = {id(layer): _Calls() for layer in layers}
    for layer in layers:
        original = layer.call

        def call(inputs, *args, _layer=layer, _original=original, **kwargs):
            if kwargs.get("training"):
                calls = seen[id(_layer)]
                calls.training += 1
                shape = tuple(inputs.shape)
                axis = _layer.axis % len(shape)
                calls.values_per_example = math.prod(
                    d for i, d in enumerate(shape) if i not in (0, axis))
            return _original(inputs, *args, **kwargs)

        layer.call = call
    try:
        yield seen
    finally:
        for layer in layers:
            del layer.call  # back to the class's method


def _without_statistics_of_their_own(seen, layers) -> dict[str, str]:
    """Layers one forward pass did not call exactly once in training mode -> why."""
    kept = {}
    for layer in layers:
        count = seen[id(layer)].training
        if count == 0:
            kept[layer.name] = ("the forward pass never calls it in training mode, so it "
                                "has no statistics to re-estimate")
        elif count > 1:
            kept[layer.name] = (f"one forward pass calls it {count} times, on different "
                                "inputs: no one set of statistics is its own")
    return kept


def _check_values_per_channel(layer, per_example: int, size: int, index: int) -> None:
    group = getattr(layer, "virtual_batch_size", None)
    smallest = min(group, size % group or group) if group else size
    if smallest * per_example < 2:
        raise InvalidSetting(
            f"recalibrate_batch_norm: {layer.name} sees one value per channel in batch "
            f"{index + 1} ({size} example(s){f', groups of {group}' if group else ''}): its "
            "variance there would be 0. Use batches of at least 2 examples (PyTorch refuses "
            "this too).")


@contextlib.contextmanager
def _kept_as_they_were(layers) -> Iterator[Any]:
    """Yields `restore(names)`, which puts the statistics of the layers named back to their
    values before; on any exception inside (KeyboardInterrupt included) every layer's are
    put back, then the exception goes on."""
    saved = {layer.name: [(v, keras.ops.convert_to_numpy(v).copy())
                          for v in layer.non_trainable_variables] for layer in layers}

    def restore(names) -> None:
        for name in names:
            for variable, value in saved[name]:
                variable.assign(value)

    try:
        yield restore
    except BaseException:
        restore(saved)
        raise


@contextlib.contextmanager
def _statistics_of_each_batch(layers, variance: str) -> Iterator[None]:
    """Momentum 0 (the moving statistics become each batch's own), renorm's statistics
    frozen (renorm momentum 1), Ghost BN's groups pooled for "population", and
    everything as it was afterwards but the moving mean and variance."""
    saved = [(layer, layer.momentum, getattr(layer, "renorm_momentum", None),
              getattr(layer, "_pool_groups", None),
              [keras.ops.convert_to_numpy(v) for v in _renorm_statistics(layer)])
             for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
            if getattr(layer, "renorm", False):
                layer.renorm_momentum = 1.0
            if getattr(layer, "_pool_groups", None) is not None:
                layer._pool_groups = variance == "population"
        yield
    finally:
        for layer, momentum, renorm_momentum, pool_groups, values in saved:
            layer.momentum = momentum
            if renorm_momentum is not None:
                layer.renorm_momentum = renorm_momentum
            if pool_groups is not None:
                layer._pool_groups = pool_groups
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


def _assign(layer, mean: np.ndarray, variance: np.ndarray) -> None:
    layer.moving_mean.assign(mean.astype(np.float32))
    layer.moving_variance.assign(variance.astype(np.float32))
    if getattr(layer, "renorm", False):
        layer.moving_stddev.assign(np.sqrt(variance + layer.epsilon).astype(np.float32))


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


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "__getitem__")


def _is_inputs(value) -> bool:
    """An array, or a dict of arrays (a model with named inputs)."""
    return _is_array(value) or (isinstance(value, dict) and bool(value)
                                and all(_is_array(v) for v in value.values()))


def _batches(data, num_batches: int | None, batch_size: int) -> Iterable:
    """The model inputs of each batch of `data` (see recalibrate_batch_norm)."""
    if isinstance(data, tuple) and data and _is_inputs(data[0]):
        data = data[0]  # (x, y) arrays, as `fit` takes them
    elif isinstance(data, list) and data and all(_is_array(b) for b in data):
        if len({tuple(b.shape[1:]) for b in data}) > 1:  # e.g. [x, y]: not batches
            raise InvalidSetting(
                "recalibrate_batch_norm: data is a list of arrays of different shapes; a "
                "list is read as batches of inputs. Pass (x, y) as a tuple, or x alone.")
    if _is_inputs(data):  # cut into batches
        first = next(iter(data.values())) if isinstance(data, dict) else data
        count = math.ceil(len(first) / batch_size)

        def cut(i):
            part = slice(i * batch_size, (i + 1) * batch_size)
            return ({k: v[part] for k, v in data.items()} if isinstance(data, dict)
                    else data[part])

        source: Iterable = (cut(i) for i in range(count))
    else:
        source = (batch[0] if isinstance(batch, (tuple, list)) else batch for batch in data)
    for i, x in enumerate(source):
        if num_batches is not None and i >= num_batches:
            return
        yield x


def _batch_size(x: Any) -> int:
    first = keras.tree.flatten(x)[0]
    return int(keras.ops.shape(first)[0])
