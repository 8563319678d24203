"""Evidence for the BN tools (bn_keras.layers: recalibrate, freeze, fold) on any backend.

- `tools_model`: a model holding every kind of BN layer the tools must handle: ours
  and Keras', plain, Ghost, renorm and frozen, after Conv2D, DepthwiseConv2D,
  SeparableConv2D and Dense, after a conv with its own ReLU, and inside a nested
  model, with non-trivial weights and moving statistics;
- `reference_statistics`: what `recalibrate_batch_norm` must give, computed apart from
  it, in NumPy, from each BN layer's input captured in a training-mode forward
  (bn_keras.testing.tools_grid, the tools' grid, holds the computation);
- `recalibration_errors` / `folding_error`: the largest differences, for tests on
  TensorFlow and for tests/backends/backend_probe.py on JAX and PyTorch.
"""

from __future__ import annotations

import keras
import numpy as np

from bn_keras.layers.batch_normalization import BatchNormalization, batch_norm_layers
from bn_keras.layers.folding import fold_batch_norm
from bn_keras.layers.recalibration import recalibrate_batch_norm
from bn_keras.testing import tools_grid

INPUT_SHAPE = (8, 8, 3)
GHOST_GROUP = 4


def tools_model(seed: int = 0) -> keras.Model:
    """A Functional model with a nested one inside; BN weights and moving statistics
    drawn at random, one Keras BN frozen (`trainable=False`)."""
    keras.utils.set_random_seed(seed)
    inner_in = keras.Input((6, 6, 8))
    h = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(inner_in)
    h = keras.layers.BatchNormalization(name="dw_bn")(h)  # Keras' own, in the nested model
    h = keras.layers.SeparableConv2D(8, 3, padding="same", name="sep")(h)
    h = BatchNormalization(virtual_batch_size=GHOST_GROUP, name="sep_ghost_bn")(h)
    inner = keras.Model(inner_in, h, name="inner")

    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU()(x)
    x = inner(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_relu")(x)
    x = BatchNormalization(name="after_relu_conv_bn")(x)  # kept by folding: ReLU in between
    x = keras.layers.Conv2D(8, 1, use_bias=False, name="conv_no_bias")(x)
    x = BatchNormalization(renorm=True, name="renorm_bn")(x)
    x = keras.layers.BatchNormalization(name="frozen_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, name="dense")(x)
    x = BatchNormalization(name="dense_bn")(x)
    model = keras.Model(inputs, x, name="tools_model")
    model.get_layer("frozen_bn").trainable = False
    randomize_batch_norm(model, seed)
    return model


def randomize_batch_norm(model: keras.Model, seed: int = 0) -> None:
    """Non-trivial gamma, beta and moving statistics in every BN layer of `model`."""
    rng = np.random.default_rng(seed)
    for layer in batch_norm_layers(model):
        layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32)
                           for w in layer.get_weights()])


def batches(count: int, batch_size: int, last: int | None = None, seed: int = 0
            ) -> list[np.ndarray]:
    """`count` batches of input images; the last one holds `last` examples if given."""
    rng = np.random.default_rng(seed)
    sizes = [batch_size] * (count - 1) + [batch_size if last is None else last]
    return [(rng.normal(size=(size, *INPUT_SHAPE)) * 2 + 0.5).astype(np.float32)
            for size in sizes]


def reference_statistics(model: keras.Model, data: list[np.ndarray], variance: str = "batch"
                         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each trainable BN layer's expected re-estimated (mean, variance), computed apart from
    the code under test (bn_keras.testing.tools_grid.reference_statistics)."""
    layers = [layer for layer in batch_norm_layers(model) if layer.trainable]
    return tools_grid.reference_statistics(model, data, variance, layers)


def recalibration_errors(model: keras.Model, data: list[np.ndarray]) -> dict[str, float]:
    """Recalibrates `model` on `data` and returns, per BN layer, the largest relative
    difference between its moving statistics and `reference_statistics` (for trainable
    layers) or its statistics before (frozen ones), and the largest change of any
    other weight."""
    expected = reference_statistics(model, data)
    before = {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}
    recalibrate_batch_norm(model, data)
    errors = {}
    for layer in batch_norm_layers(model):
        if layer.name in expected:
            mean, variance = expected[layer.name]
        else:
            mean, variance = before[layer.moving_mean.path], before[layer.moving_variance.path]
        errors[layer.name] = max(
            _relative(layer.moving_mean, mean, scale=np.sqrt(variance)),
            _relative(layer.moving_variance, variance, scale=variance))
    statistics = {w.path for layer in batch_norm_layers(model)
                  for w in (layer.moving_mean, layer.moving_variance,
                            getattr(layer, "moving_stddev", None)) if w is not None}
    errors["other_weights"] = max(
        float(np.max(np.abs(keras.ops.convert_to_numpy(w) - before[w.path])))
        for w in model.weights if w.path not in statistics)
    return errors


def folding_error(model: keras.Model, x: np.ndarray) -> float:
    """The largest |difference| between the inference outputs of `model` folded and not."""
    folded = fold_batch_norm(model)
    return float(np.max(np.abs(keras.ops.convert_to_numpy(folded(x, training=False))
                               - keras.ops.convert_to_numpy(model(x, training=False)))))


def _relative(variable, expected, scale) -> float:
    actual = keras.ops.convert_to_numpy(variable).astype(np.float64)
    return float(np.max(np.abs(actual - expected) / np.maximum(scale, 1e-6)))
