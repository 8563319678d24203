"""Evidence for the BN tools (fold, recalibrate, freeze), case by case, on any backend.

The layer has its grid (bn_keras.testing.equivalence); this is the tools'. Each `ToolCase`
builds a small model around one situation a user meets (a convolution of each kind, a
Dense on 2-D and 3-D inputs, channels_first, nested and Sequential models, a BN used
twice, mixed precision, inputs far from zero, ...), for our BN layer and Keras' alike,
and `check_fold`, `check_recalibration` and `check_freeze` hold each tool's result
against a reference that does not use the tools' code:

- folding: the producer's folded weights against PyTorch's `fuse_conv_bn_weights` /
  `fuse_linear_bn_weights` where torch can be imported, else a float64 NumPy fold written
  here, on PyTorch's (out, in, ...) weight layout; and the folded model's outputs against
  the unfolded model's; which BN layers are kept, by name;
- recalibration: each layer's statistics against float64 NumPy computed from its inputs,
  captured in a training-mode forward of each batch, in both conventions ("batch",
  "population"); layers that must keep their statistics (frozen, shared, never run in
  training mode) and every other weight unchanged; refusals leave the model exactly as
  it was;
- freezing: each frozen BN's output in a training-mode call against BN's inference
  formula in float64 (PyTorch's `F.batch_norm(training=False)` where torch is the
  backend), and a `fit` step changing no BN weight.

`experiments/validate_tools.py` writes the grid's tables (validation_tools*.md);
tests/layers/test_tools_grid.py runs it on TensorFlow, tests/backends/backend_probe.py
on JAX and PyTorch.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from bn_keras.layers.batch_normalization import BatchNormalization, batch_norm_layers
from bn_keras.layers.folding import fold_batch_norm, fold_report
from bn_keras.layers.freezing import freeze_batch_norm
from bn_keras.layers.recalibration import recalibrate_batch_norm
from bn_keras.precision import dtype_policy
from bn_keras.testing.equivalence import scaled_difference

BN_CLASSES = {"ours": BatchNormalization, "keras": keras.layers.BatchNormalization}
# Folded vs unfolded outputs, scaled as equivalence.scaled_difference. Mixed precision:
# the folded layer rounds W * gamma / sigma to the compute dtype where the unfolded one
# rounded W: 8 units of the dtype's last place (measured: about 2, 0.0070 in bfloat16 and
# 0.00087 in float16, experiments/results/validation_tools.md).
FOLD_TOLERANCES = {"float32": 1e-4, "mixed_float16": 8 * 2.0 ** -11,
                   "mixed_bfloat16": 8 * 2.0 ** -8}
WEIGHT_TOLERANCE = 1e-6  # folded weights against the reference (float64 math, float32 kept)
STATISTICS_TOLERANCE = 1e-5  # relative to the channel's spread
# Where a layer's own float32 statistics of a batch are further off than that, the tool
# may be as far off as the layer, up to this rounding factor (as the layer's grid allows).
ROUNDING_ALLOWANCE = 2.0
FREEZE_TOLERANCE = 1e-5


@dataclasses.dataclass(frozen=True)
class ToolCase:
    """One situation for the tools: a model builder (given a BN class) and its data."""

    name: str
    build: Callable[[type], keras.Model]
    input_shape: tuple[int, ...]  # one example's
    folded: int  # BN layers fold_batch_norm must fold (on TensorFlow, see tf_folded)
    kept: tuple[str, ...] = ()  # BN layers it must keep, by name
    # Where Keras' TensorFlow backend differs (a Keras bug, bn_keras.keras_compat): the
    # BN layers folded and kept there.
    tf_folded: int | None = None
    tf_kept: tuple[str, ...] | None = None
    ours_only: bool = False  # Ghost BN: Keras 3's layer has no virtual_batch_size
    policy: str = "float32"
    offset: float = 0.0  # inputs: normal * spread + offset
    spread: float = 2.0
    batches: tuple[int, ...] = (16, 16, 5)  # batch sizes, a short last one
    recalibration_kept: tuple[str, ...] = ()  # trainable BN layers that keep statistics
    recalibration_refused: str | None = None  # the refusal's message, where one is due

    def expected_fold(self) -> tuple[int, tuple[str, ...]]:
        """(BN layers folded, names of those kept) on the backend Keras runs on."""
        if keras.config.backend() == "tensorflow" and self.tf_folded is not None:
            return self.tf_folded, tuple(sorted(self.tf_kept or ()))
        return self.folded, tuple(sorted(self.kept))


# ---------------------------------------------------------------------------- cases
def _chain(input_shape, producer: Callable[[], keras.layers.Layer], **bn_kwargs):
    """Input -> producer -> BN("bn"), for a BN class."""
    def build(bn_class):
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, bn_class(name="bn", **bn_kwargs)(producer()(inputs)))
    return build


def _bn_after_relu(bn_class):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv_relu")(inputs)
    x = bn_class(name="bn_after_conv_relu")(x)
    x = keras.layers.Conv2D(6, 3, name="conv")(x)
    x = keras.layers.ReLU()(x)
    return keras.Model(inputs, bn_class(name="bn_after_relu_layer")(x))


def _strided_dilated(bn_class):
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(6, 3, strides=2, name="strided")(inputs)
    x = bn_class(name="bn_strided")(x)
    x = keras.layers.Conv2D(6, 3, dilation_rate=2, name="dilated")(x)
    return keras.Model(inputs, bn_class(name="bn_dilated")(x))


def _nested(bn_class):
    inner_in = keras.Input((6, 6, 6))
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inner_in)
    inner = keras.Model(inner_in, bn_class(name="dw_bn")(h), name="inner")
    sequential = keras.Sequential([keras.Input((6, 6, 6)), keras.layers.Conv2D(4, 1, name="pw"),
                                   bn_class(name="pw_bn")], name="seq")
    inputs = keras.Input((8, 8, 3))
    x = bn_class(name="conv_bn")(keras.layers.Conv2D(6, 3, name="conv")(inputs))
    return keras.Model(inputs, sequential(inner(x)))


def _sequential(bn_class):
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(6, 3, name="conv"),
                             bn_class(name="bn"), keras.layers.Flatten(),
                             keras.layers.Dense(5, name="dense"), bn_class(name="dense_bn")])


def _producer_used_twice(bn_class):
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = bn_class(name="bn")(conv)
    return keras.Model(inputs, keras.layers.Add()([x, conv]))


def _bn_used_twice(bn_class):
    inputs = keras.Input((7,))
    bn = bn_class(name="shared_bn")
    y1 = bn(keras.layers.Dense(5, name="d1")(inputs))
    y2 = bn(keras.layers.Dense(5, name="d2")(inputs))
    return keras.Model(inputs, keras.layers.Concatenate()([y1, y2]))


class _NeverTrained(keras.Model):
    """A subclassed model whose `bn_off` is always called in inference mode."""

    def __init__(self, bn_class):
        super().__init__(name="never_trained")
        self.conv = keras.layers.Conv2D(4, 3)
        self.bn = bn_class(name="bn")
        self.bn_off = bn_class(name="bn_off")

    def call(self, x, training=None):
        return self.bn_off(self.bn(self.conv(x), training=training), training=False)


def _never_trained(bn_class):
    model = _NeverTrained(bn_class)
    model(np.zeros((2, 8, 8, 3), np.float32))
    return model


def _frozen(bn_class):
    model = _chain((8, 8, 3), lambda: keras.layers.Conv2D(6, 3))(bn_class)
    model.get_layer("bn").trainable = False
    return model


def default_grid() -> list[ToolCase]:
    """Every situation the tools are proven on (the same list on every backend)."""
    conv2d = lambda **kw: (lambda: keras.layers.Conv2D(6, 3, **kw))  # noqa: E731
    return [
        ToolCase("Conv1D", _chain((12, 4), lambda: keras.layers.Conv1D(6, 3)), (12, 4), 1),
        ToolCase("Conv2D", _chain((8, 8, 3), conv2d()), (8, 8, 3), 1),
        ToolCase("Conv3D", _chain((6, 6, 6, 2), lambda: keras.layers.Conv3D(4, 3)),
                 (6, 6, 6, 2), 1),
        ToolCase("DepthwiseConv1D", _chain(
            (12, 4), lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2)), (12, 4), 1),
        ToolCase("DepthwiseConv2D", _chain(
            (8, 8, 3), lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2)),
            (8, 8, 3), 1),
        ToolCase("SeparableConv1D", _chain((12, 4), lambda: keras.layers.SeparableConv1D(6, 3)),
                 (12, 4), 1),
        ToolCase("SeparableConv2D", _chain(
            (8, 8, 3), lambda: keras.layers.SeparableConv2D(6, 3)), (8, 8, 3), 1),
        ToolCase("Dense on 2-D", _chain((7,), lambda: keras.layers.Dense(5)), (7,), 1),
        ToolCase("Dense on 3-D", _chain((6, 7), lambda: keras.layers.Dense(5)), (6, 7), 1),
        ToolCase("Conv2D without bias", _chain((8, 8, 3), conv2d(use_bias=False)), (8, 8, 3), 1),
        ToolCase("center=False scale=False", _chain((8, 8, 3), conv2d(), center=False,
                                                    scale=False), (8, 8, 3), 1),
        ToolCase("channels_first, axis=1", _chain(
            (4, 8, 8), lambda: keras.layers.Conv2D(5, 3, data_format="channels_first"),
            axis=1), (4, 8, 8), 1),
        ToolCase("channels_first, axis=1, last axis = filters", _chain(
            (4, 7, 7), lambda: keras.layers.Conv2D(5, 3, data_format="channels_first"),
            axis=1), (4, 7, 7), 1, tf_folded=0, tf_kept=("bn",)),
        ToolCase("channels_first, axis=-1 (mismatch)", _chain(
            (4, 8, 8), lambda: keras.layers.Conv2D(5, 3, data_format="channels_first")),
            (4, 8, 8), 0, kept=("bn",)),
        ToolCase("strided and dilated", _strided_dilated, (12, 12, 3), 2),
        ToolCase("nested Functional and Sequential", _nested, (8, 8, 3), 3),
        ToolCase("Sequential", _sequential, (8, 8, 3), 2),
        ToolCase("producer used twice", _producer_used_twice, (8, 8, 3), 0, kept=("bn",)),
        ToolCase("BN used twice", _bn_used_twice, (7,), 0, kept=("shared_bn",),
                 recalibration_kept=("shared_bn",)),
        ToolCase("BN after an activation", _bn_after_relu, (8, 8, 3), 0,
                 kept=("bn_after_conv_relu", "bn_after_relu_layer")),
        ToolCase("BN never run in training mode", _never_trained, (8, 8, 3), 0,
                 kept=("bn", "bn_off"), recalibration_kept=("bn_off",)),
        ToolCase("Ghost BN, short last group", _chain(
            (8, 8, 3), conv2d(), virtual_batch_size=4), (8, 8, 3), 1, ours_only=True),
        ToolCase("renorm", _chain((8, 8, 3), conv2d(), renorm=True,
                                  renorm_clipping={"rmax": 3.0, "dmax": 5.0}), (8, 8, 3), 1),
        ToolCase("frozen BN", _frozen, (8, 8, 3), 1),
        ToolCase("mixed_float16", _chain((8, 8, 3), conv2d()), (8, 8, 3), 1,
                 policy="mixed_float16"),
        ToolCase("mixed_bfloat16", _chain((8, 8, 3), conv2d()), (8, 8, 3), 1,
                 policy="mixed_bfloat16"),
        ToolCase("inputs x*100+1e3", _chain((8, 8, 3), conv2d()), (8, 8, 3), 1,
                 offset=1e3, spread=100.0),
        ToolCase("Dense, a batch of 1", _chain((7,), lambda: keras.layers.Dense(5)), (7,), 1,
                 batches=(8, 1), recalibration_refused="sees one value per channel"),
    ]


def grid_for(bn: str) -> list[ToolCase]:
    return [case for case in default_grid() if bn == "ours" or not case.ours_only]


# ---------------------------------------------------------------------------- data
def build(case: ToolCase, bn: str, seed: int = 0) -> keras.Model:
    """The case's model with random weights and BN statistics away from their defaults."""
    keras.utils.set_random_seed(seed)
    with dtype_policy(case.policy):
        model = case.build(BN_CLASSES[bn])
    rng = np.random.default_rng(seed)
    for layer in batch_norm_layers(model):
        layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
        if case.offset:  # statistics at the scale of the producer's outputs
            mean, variance = layer.moving_mean, layer.moving_variance
            mean.assign(keras.ops.convert_to_numpy(mean) * case.offset)
            variance.assign(keras.ops.convert_to_numpy(variance) * case.spread ** 2 * 100)
    return model


def batches(case: ToolCase, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(size, *case.input_shape)) * case.spread + case.offset)
            .astype(np.float32) for size in case.batches]


def _numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x).astype(np.float64)


def _weights(model) -> dict[str, np.ndarray]:
    return {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}


@contextlib.contextmanager
def _captured(layers) -> Iterator[dict[int, list]]:
    """The inputs (float64) and outputs of every call of each of `layers` inside."""
    seen: dict[int, list] = {id(layer): [] for layer in layers}
    for layer in layers:
        original = layer.call

        def call(inputs, *args, _layer=layer, _original=original, **kwargs):
            outputs = _original(inputs, *args, **kwargs)
            seen[id(_layer)].append((_numpy(inputs), _numpy(outputs), kwargs.get("training")))
            return outputs

        layer.call = call
    try:
        yield seen
    finally:
        for layer in layers:
            del layer.call


# ------------------------------------------------------------------------- folding
def check_fold(case: ToolCase, bn: str) -> dict[str, Any]:
    """fold_batch_norm on the case: what it folded and kept, the folded weights against
    the reference, the outputs against the unfolded model's."""
    model = build(case, bn)
    before = _weights(model)
    x = batches(case)[0]
    report = fold_report(model)
    folded = fold_batch_norm(model)
    weight_error = max([0.0] + [_folded_weight_error(model, folded, producer, bn_name)
                                for producer, bn_name in report.folded])
    output_error = scaled_difference(_numpy(folded(x, training=False)),
                                     _numpy(model(x, training=False)))
    kept = tuple(sorted(name.split("/")[-1] for name in report.kept))
    unchanged = all(np.array_equal(v, before[k]) for k, v in _weights(model).items())
    passed = ((len(report.folded), kept) == case.expected_fold()
              and weight_error <= WEIGHT_TOLERANCE and unchanged
              and output_error <= FOLD_TOLERANCES[case.policy])
    return {"folded": len(report.folded), "kept": ", ".join(kept) or "-",
            "weights_vs_reference": weight_error, "output_vs_unfolded": output_error,
            "fold_tolerance": FOLD_TOLERANCES[case.policy], "model_unchanged": unchanged,
            "fold_reference": _reference_name(), "fold_passed": passed}


def _find(model, path: str):
    """A layer by `outer/inner` name (fold_report's naming of nested models)."""
    for part in path.split("/"):
        model = model.get_layer(part)
    return model


def _folded_weight_error(model, folded, producer_path: str, bn_path: str) -> float:
    producer, bn_layer = _find(model, producer_path), _find(model, bn_path)
    kernel_name = "pointwise_kernel" if hasattr(producer, "pointwise_kernel") else "kernel"
    kernel = _numpy(getattr(producer, kernel_name))
    bias = _numpy(producer.bias) if getattr(producer, "bias", None) is not None else None
    depthwise = isinstance(producer, (keras.layers.DepthwiseConv1D,
                                      keras.layers.DepthwiseConv2D))
    torch_layout = _to_torch_layout(kernel, depthwise)
    channels = torch_layout.shape[0]
    ones, zeros = np.ones(channels), np.zeros(channels)
    gamma = _numpy(bn_layer.gamma) if bn_layer.scale else ones
    beta = _numpy(bn_layer.beta) if bn_layer.center else zeros
    expected_kernel, expected_bias = _reference_fold(
        torch_layout, zeros if bias is None else bias, _numpy(bn_layer.moving_mean),
        _numpy(bn_layer.moving_variance), bn_layer.epsilon, gamma, beta,
        linear=isinstance(producer, keras.layers.Dense))
    target = _find(folded, producer_path)
    actual_kernel = _to_torch_layout(_numpy(getattr(target, kernel_name)), depthwise)
    return max(scaled_difference(actual_kernel, expected_kernel),
               scaled_difference(_numpy(target.bias), expected_bias))


def _to_torch_layout(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """A Keras kernel as PyTorch holds it: (out, in, *window); Dense (in, out) -> (out, in);
    depthwise (*window, in, multiplier) -> (in * multiplier, 1, *window)."""
    if depthwise:
        window = kernel.shape[:-2]
        flat = kernel.reshape(*window, -1)  # output channel c * multiplier + m
        return np.moveaxis(flat, -1, 0)[:, None]
    order = (kernel.ndim - 1, kernel.ndim - 2, *range(kernel.ndim - 2))
    return np.transpose(kernel, order)


def _reference_name() -> str:
    return "torch fuse_*_bn_weights" if _torch_fusion() is not None else "float64 NumPy"


def _torch_fusion():
    try:
        from torch.nn.utils import fusion
    except ImportError:
        return None
    return fusion


def _reference_fold(kernel, bias, mean, variance, epsilon, gamma, beta, linear):
    """(kernel, bias) of the fold in PyTorch's layout: torch's own functions where torch
    imports, else each output channel o scaled by gamma[o] / sqrt(variance[o] + epsilon)."""
    fusion = _torch_fusion()
    if fusion is not None:
        import torch

        t = [torch.from_numpy(np.asarray(a, np.float64)) for a in
             (kernel, bias, mean, variance, gamma, beta)]
        fuse = fusion.fuse_linear_bn_weights if linear else fusion.fuse_conv_bn_weights
        w, b = fuse(t[0], t[1], t[2], t[3], epsilon, t[4], t[5])
        return w.detach().numpy(), b.detach().numpy()
    scale = gamma / np.sqrt(variance + epsilon)
    return (kernel * scale.reshape((-1,) + (1,) * (kernel.ndim - 1)),
            (bias - mean) * scale + beta)


# -------------------------------------------------------------------- recalibration
def captured_inputs(model: keras.Model, data: list[np.ndarray], layers
                    ) -> dict[str, list[np.ndarray]]:
    """Each of `layers`' inputs (float64) in a training-mode forward of each batch, every
    weight as it was before for each batch."""
    saved = [keras.ops.convert_to_numpy(w) for w in model.weights]
    with _captured(layers) as seen:
        for x in data:
            model(x, training=True)
            for weight, value in zip(model.weights, saved, strict=True):
                weight.assign(value)
    return {layer.name: [inputs for inputs, _, _ in seen[id(layer)]] for layer in layers}


def reference_statistics(model: keras.Model, data: list[np.ndarray], variance: str,
                         layers) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each of `layers`' expected re-estimated (mean, variance), from its inputs captured
    in a training-mode forward of each batch (`captured_inputs`): per batch, the mean and
    biased variance over all axes but the feature axis (Ghost BN: per group, averaged by
    group size); then averaged over batches by size. "population" adds the size-weighted
    variance of the batch (Ghost BN: group) means."""
    return statistics_of(captured_inputs(model, data, layers), layers, variance)


def statistics_of(seen: dict[str, list[np.ndarray]], layers, variance: str
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`reference_statistics` from the captured inputs `seen`."""
    expected = {}
    for layer in layers:
        parts = []  # (size, mean, variance) of each batch or group
        for inputs in seen[layer.name]:
            axis = layer.axis % inputs.ndim
            axes = tuple(i for i in range(inputs.ndim) if i != axis)
            group = getattr(layer, "virtual_batch_size", None) or len(inputs)
            groups = [inputs[s:s + group] for s in range(0, len(inputs), group)]
            stats = [(len(g), g.mean(axis=axes), g.var(axis=axes)) for g in groups]
            if variance == "batch" and group < len(inputs):  # Ghost BN: one (mean, var) a batch
                size = len(inputs)
                stats = [(size, sum(n * m for n, m, _ in stats) / size,
                          sum(n * v for n, _, v in stats) / size)]
            parts += stats
        total = sum(n for n, _, _ in parts)
        mean = sum(n * m for n, m, _ in parts) / total
        var = sum(n * v for n, _, v in parts) / total
        if variance == "population":
            var = var + sum(n * (m - mean) ** 2 for n, m, _ in parts) / total
        expected[layer.name] = (mean, var)
    return expected


def _statistics_error(mean, variance, expected_mean, expected_variance) -> float:
    """Relative to the channel's spread (the mean) and to the variance (the variance)."""
    spread = np.sqrt(np.maximum(expected_variance, 1e-12))
    return max(float(np.max(np.abs(_numpy(mean) - expected_mean) / spread)),
               float(np.max(np.abs(_numpy(variance) - expected_variance)
                            / np.maximum(expected_variance, 1e-12))))


def _own_statistics_error(layer, inputs: np.ndarray) -> float:
    """How far a fresh layer of the same configuration, called once in training mode with
    momentum 0, puts its moving statistics from the exact ones of `inputs`."""
    if getattr(layer, "virtual_batch_size", None):
        return 0.0  # its statistics are its groups', not the batch's: no allowance
    config = {**layer.get_config(), "momentum": 0.0}
    config.pop("name")
    fresh = layer.__class__.from_config(config)
    fresh.build(inputs.shape)
    fresh(inputs.astype(np.float32), training=True)
    axis = layer.axis % inputs.ndim
    axes = tuple(i for i in range(inputs.ndim) if i != axis)
    return _statistics_error(fresh.moving_mean, fresh.moving_variance, inputs.mean(axis=axes),
                             inputs.var(axis=axes))


def check_recalibration(case: ToolCase, bn: str, variance: str) -> dict[str, Any]:
    """recalibrate_batch_norm on the case against the NumPy reference, or its refusal."""
    model = build(case, bn)
    data = batches(case)
    before = _weights(model)
    trainable = [layer for layer in batch_norm_layers(model) if layer.trainable]
    if case.recalibration_refused:
        try:
            recalibrate_batch_norm(model, data, variance=variance)
            refused = False
        except ValueError as e:
            refused = case.recalibration_refused in str(e)
        unchanged = all(np.array_equal(v, before[k]) for k, v in _weights(model).items())
        return {f"recalibrate_{variance}": "refused" if refused else "NOT refused",
                f"recalibrate_{variance}_passed": refused and unchanged}
    checked = [layer for layer in trainable if layer.name not in case.recalibration_kept]
    seen = captured_inputs(model, data, checked)
    expected = statistics_of(seen, checked, variance)
    report = recalibrate_batch_norm(model, data, variance=variance)
    error, within, own = 0.0, True, None
    may_change = set()  # the re-estimated statistics; every other weight must stay
    for layer in batch_norm_layers(model):
        if layer.name not in expected:
            continue
        mean, var = expected[layer.name]
        layer_error = _statistics_error(layer.moving_mean, layer.moving_variance, mean, var)
        error = max(error, layer_error)
        if layer_error > STATISTICS_TOLERANCE:
            # The tool gives what the layer itself computes in training mode: where the
            # layer's own float32 statistics of one batch are further off (Keras' BN on
            # PyTorch far from zero), the tool may be as far off, up to rounding.
            own = _own_statistics_error(layer, seen[layer.name][0])
            within = within and layer_error <= ROUNDING_ALLOWANCE * own
        may_change |= {layer.moving_mean.path, layer.moving_variance.path}
        if getattr(layer, "renorm", False):
            may_change.add(layer.moving_stddev.path)
    unchanged_elsewhere = all(
        np.array_equal(keras.ops.convert_to_numpy(w), before[w.path])
        for w in model.weights if w.path not in may_change)
    kept_ok = set(report.kept) == set(case.recalibration_kept)
    shown = error if own is None else f"{error:.3g} (the layer's own: {own:.3g})"
    return {f"recalibrate_{variance}": shown,
            f"recalibrate_{variance}_passed": within and unchanged_elsewhere and kept_ok}


# ------------------------------------------------------------------------- freezing
def check_freeze(case: ToolCase, bn: str) -> dict[str, Any]:
    """freeze_batch_norm on the case: each BN's training-mode output against the inference
    formula in float64, and one `fit` step changing no BN weight."""
    model = build(case, bn)
    freeze_batch_norm(model)
    x = batches(case)[0]
    layers = batch_norm_layers(model)
    error = 0.0
    with _captured(layers) as seen:
        model(x, training=True)
    for layer in layers:
        for inputs, outputs, _ in seen[id(layer)]:
            error = max(error, scaled_difference(outputs, _inference_reference(layer, inputs)))
    before = {w.path: keras.ops.convert_to_numpy(w).copy() for layer in layers
              for w in layer.weights}
    output = model(x, training=False)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, np.ones(keras.ops.shape(output), np.float32), batch_size=len(x), epochs=1,
              verbose=0)
    fixed = all(np.array_equal(keras.ops.convert_to_numpy(w), before[w.path])
                for layer in layers for w in layer.weights)
    tolerance = FREEZE_TOLERANCE if case.policy == "float32" else FOLD_TOLERANCES[case.policy]
    return {"freeze_vs_inference": error, "fit_changes_no_bn_weight": fixed,
            "freeze_passed": error <= tolerance and fixed}


def _inference_reference(layer, inputs: np.ndarray) -> np.ndarray:
    """BN in inference mode on `inputs`, in float64: PyTorch's F.batch_norm where Keras
    runs on torch, else (x - mean) / sqrt(var + eps) * gamma + beta in NumPy."""
    channels = layer.moving_mean.shape[0]
    gamma = _numpy(layer.gamma) if layer.scale else np.ones(channels)
    beta = _numpy(layer.beta) if layer.center else np.zeros(channels)
    mean, var = _numpy(layer.moving_mean), _numpy(layer.moving_variance)
    axis = layer.axis % inputs.ndim
    if keras.config.backend() == "torch":
        import torch
        import torch.nn.functional as F

        moved = torch.from_numpy(np.moveaxis(inputs, axis, 1).copy())
        y = F.batch_norm(moved, *(torch.from_numpy(a) for a in (mean, var, gamma, beta)),
                         training=False, eps=layer.epsilon)
        return np.moveaxis(y.numpy(), 1, axis)
    shape = [1] * inputs.ndim
    shape[axis] = channels
    return ((inputs - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + layer.epsilon)
            * gamma.reshape(shape) + beta.reshape(shape))


# ------------------------------------------------------------------------------ all
def check(case: ToolCase, bn: str) -> dict[str, Any]:
    """Every tool on one case: a row of the grid's table."""
    row = {"case": case.name, "bn": bn, "policy": case.policy}
    row.update(check_fold(case, bn))
    for variance in ("batch", "population"):
        row.update(check_recalibration(case, bn, variance))
    row.update(check_freeze(case, bn))
    row["passed"] = all(row[k] for k in row if k.endswith("_passed"))
    return row



@dataclasses.dataclass(frozen=True)
class StrategyCheck:
    rows: list[dict[str, Any]]
    text: str


def check_under_strategy(strategy) -> StrategyCheck:
    """TensorFlow: recalibration and folding of a model built under `strategy` (a
    MirroredStrategy) against the same model built without it: every replica's copy of
    the statistics, and the folded outputs."""
    rows = []
    for bn in BN_CLASSES:
        case = next(c for c in default_grid() if c.name == "Conv2D")
        plain = build(case, bn)
        with strategy.scope():
            mirrored = build(case, bn)
        data = batches(case)
        for model in (plain, mirrored):
            recalibrate_batch_norm(model, data)
        error = 0.0
        for a, b in zip(batch_norm_layers(plain), batch_norm_layers(mirrored), strict=True):
            for va, vb in ((a.moving_mean, b.moving_mean), (a.moving_variance, b.moving_variance)):
                for copy in getattr(vb.value, "values", [vb.value]):
                    error = max(error, scaled_difference(_numpy(copy), _numpy(va)))
        x = data[0]
        fold_error = scaled_difference(_numpy(fold_batch_norm(mirrored)(x)),
                                       _numpy(plain(x, training=False)))
        rows.append({"case": f"Conv2D under {type(strategy).__name__} "
                             f"({strategy.num_replicas_in_sync} replicas)",
                     "bn": bn, "policy": "float32", "output_vs_unfolded": fold_error,
                     "recalibrate_batch": error,
                     "passed": error <= STATISTICS_TOLERANCE
                     and fold_error <= FOLD_TOLERANCES["float32"]})
    text = (" The rows 'under MirroredStrategy' build the Conv2D case under a 2-replica "
            "strategy on two logical CPUs: `recalibrate_batch` is every replica's copy of "
            "the re-estimated statistics against those of the model built without the "
            "strategy, `output_vs_unfolded` the folded mirrored model against the plain "
            "unfolded one.")
    return StrategyCheck(rows, text)
