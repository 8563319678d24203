"""The doctor's data checks: the model scored on labelled data with its moving statistics
(inference mode), with each batch's own statistics (training mode), and with statistics
re-estimated for its current weights (bn_keras.layers.recalibration), and how far each
BN layer's moving statistics are from the re-estimated ones.

The model is left exactly as it was (every variable is restored), unless the caller
keeps the re-estimated statistics (`repair_batch_norm`). keras.ops and NumPy only: the
same on TensorFlow, JAX and PyTorch.

Scores are the cross-entropy and accuracy for classifiers (labels as class indices or
one-hot rows; outputs as logits or probabilities), the mean squared error otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from bn_keras.doctor.findings import LayerStatistics, Measurement, Score
from bn_keras.errors import InvalidSetting
from bn_keras.layers.recalibration import recalibrate_batch_norm

Batch = tuple[Any, np.ndarray | None]


def take_batches(data, max_batches: int, batch_size: int) -> list[Batch]:
    """Up to `max_batches` (x, y) batches of `data`: arrays `(x, y)` (or `x`) cut into
    batches of `batch_size`, or a tf.data.Dataset or any other iterable of batches (`x`
    or `(x, y, ...)`). Labels come back as NumPy arrays (None where there are none)."""
    if max_batches < 1:
        raise InvalidSetting(f"max_batches must be at least 1, got {max_batches}.")
    if hasattr(data, "shape"):
        data = (data,)
    if isinstance(data, tuple) and data and hasattr(data[0], "shape"):
        x, y = data[0], (data[1] if len(data) > 1 else None)
        count = min(math.ceil(len(x) / batch_size), max_batches)
        found = [(x[i * batch_size:(i + 1) * batch_size],
                  None if y is None else np.asarray(y[i * batch_size:(i + 1) * batch_size]))
                 for i in range(count)]
    else:
        found = []
        for batch in data:
            if len(found) >= max_batches:
                break
            if isinstance(batch, (tuple, list)):
                y = batch[1] if len(batch) > 1 else None
                found.append((batch[0], None if y is None else keras.ops.convert_to_numpy(y)))
            else:
                found.append((batch, None))
    if not found:
        raise InvalidSetting("the data holds no batch.")
    return found


def _forward(model: keras.Model, training: bool) -> Callable:
    """model(x, training=...), traced once on TensorFlow, without gradients on PyTorch."""
    # A partial, not a lambda: TensorFlow counts traces by code object, and would warn of
    # "retracing" when each diagnosis traces a lambda of the same code.
    call = functools.partial(model, training=training)
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(call, reduce_retracing=True)
    if keras.config.backend() == "torch":
        import torch

        return torch.no_grad()(call)
    return call


def _outputs(outputs) -> np.ndarray:
    first = keras.tree.flatten(outputs)[0]
    return keras.ops.convert_to_numpy(keras.ops.cast(first, "float32")).astype(np.float64)


def _per_example(outputs: np.ndarray, y: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-example loss and correctness (None without class labels)."""
    n = outputs.shape[0]
    if y is None:
        return np.full(n, np.nan), None
    flat = outputs.reshape(n, -1)
    classes = flat.shape[1]
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape == flat.shape and classes > 1:
        labels = labels.argmax(1)  # one-hot rows
    labels = labels.reshape(-1)
    if not (classes > 1 and labels.shape[0] == n and np.all(np.isfinite(labels))
            and np.all(labels == np.round(labels)) and labels.min() >= 0
            and labels.max() < classes):
        try:
            return np.mean((flat - np.asarray(y, np.float64).reshape(flat.shape)) ** 2, 1), None
        except ValueError:
            return np.full(n, np.nan), None
    labels = labels.astype(np.int64)
    if np.all((flat >= 0) & (flat <= 1)) and np.allclose(flat.sum(1), 1, atol=1e-3):
        log_p = np.log(np.clip(flat, 1e-12, 1.0))  # probabilities
    else:  # logits
        with np.errstate(all="ignore"):
            shifted = flat - flat.max(1, keepdims=True)
            log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return -log_p[np.arange(n), labels], flat.argmax(1) == labels


def _score(forward: Callable, batches: Sequence[Batch]) -> tuple[Score, np.ndarray | None]:
    losses, correct = [], []
    for x, y in batches:
        loss, right = _per_example(_outputs(forward(x)), y)
        losses.append(loss)
        correct.append(right)
    loss = np.concatenate(losses)
    right = None if any(c is None for c in correct) else np.concatenate(correct)
    accuracy = None if right is None else float(right.mean())
    return Score(float(loss.mean()), accuracy, int(loss.size)), right


def score(model: keras.Model, batches: Sequence[Batch]) -> Score:
    """The model's score on `batches` in inference mode, as it is."""
    return _score(_forward(model, False), batches)[0]


def _statistic_variables(layer) -> list:
    names = ["moving_mean", "moving_variance"] + (["moving_stddev"] if getattr(
        layer, "renorm", False) else [])
    return [getattr(layer, name) for name in names]


def _layer_statistics(name: str, layer, moving: list[np.ndarray], data: list[np.ndarray]
                      ) -> LayerStatistics:
    """How far the moving statistics are from the data's (see LayerStatistics)."""
    eps = float(layer.epsilon)
    mean, variance = (v.astype(np.float64) for v in moving[:2])
    data_mean, data_variance = (v.astype(np.float64) for v in data[:2])
    with np.errstate(all="ignore"):
        scale = np.sqrt((data_variance + eps) / (variance + eps))
        shift = (data_mean - mean) / np.sqrt(variance + eps)
        error = float(np.sqrt(np.mean((scale - 1) ** 2 + shift ** 2)))
        ratio = float(np.median(data_variance / variance))
        mean_shift = float(np.median(np.abs(shift)))
    return LayerStatistics(name, *(v if math.isfinite(v) else None
                                   for v in (error, ratio, mean_shift)))


@contextlib.contextmanager
def _left_out(layers: Iterable) -> Iterator[None]:
    """`layers` marked non-trainable, which recalibration passes over, for a while."""
    saved = [(layer, layer.trainable) for layer in layers]
    try:
        for layer, _ in saved:
            layer.trainable = False
        yield
    finally:
        for layer, trainable in saved:
            layer.trainable = trainable


def _changed(a: np.ndarray | None, b: np.ndarray | None) -> int:
    return 0 if a is None or b is None else int(np.sum(a != b))


def measure(model: keras.Model, layers: Sequence[keras.layers.Layer], names: dict[int, str],
            evaluation: Sequence[Batch], calibration: Sequence[Batch],
            left_out: Sequence[keras.layers.Layer] = (),
            keep: Callable[[Measurement], bool] | None = None) -> Measurement:
    """Scores `model` on the `evaluation` batches with its moving statistics, in training
    mode, and with statistics re-estimated on the `calibration` batches (the BN layers in
    `left_out`, e.g. never called, keep theirs); returns the Measurement. The model is
    restored afterwards, but where `keep(measurement)` is true the re-estimated statistics
    stay in it."""
    start = time.perf_counter()
    variables = list(model.variables)
    saved = [keras.ops.convert_to_numpy(v).copy() for v in variables]
    moving = {id(layer): [keras.ops.convert_to_numpy(v).copy()
                          for v in _statistic_variables(layer)] for layer in layers}
    re_estimated = {}
    try:
        moving_score, moving_right = _score(_forward(model, False), evaluation)
        batch_score, batch_right = _score(_forward(model, True), evaluation)
        _restore(variables, saved)
        with _left_out(left_out):
            info = recalibrate_batch_norm(model, [x for x, _ in calibration])
        re_estimated = {id(layer): [keras.ops.convert_to_numpy(v).copy()
                                    for v in _statistic_variables(layer)] for layer in layers}
        re_score, re_right = _score(_forward(model, False), evaluation)
    finally:
        _restore(variables, saved)
    per_layer = tuple(_layer_statistics(names[id(layer)], layer, moving[id(layer)],
                                        re_estimated[id(layer)])
                      for layer in layers if layer not in left_out)
    measurement = Measurement(
        moving=moving_score, batch=batch_score, re_estimated=re_score,
        calibration_batches=info.batches, calibration_examples=info.examples,
        evaluation_batches=len(evaluation), layers=per_layer,
        changed_predictions=_changed(moving_right, re_right),
        batch_changed_predictions=_changed(batch_right, re_right),
        seconds=time.perf_counter() - start)
    if keep is not None and keep(measurement):
        for layer in layers:
            if layer not in left_out:
                for variable, value in zip(_statistic_variables(layer),
                                           re_estimated[id(layer)], strict=True):
                    variable.assign(value)
    return measurement


def _restore(variables: list, values: list[np.ndarray]) -> None:
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
