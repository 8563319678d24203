"""Folding inference-mode BN into the convolution or dense layer before it.

Once training is over, BN is an affine map per channel,
y = (x - moving_mean) * a + beta with a = gamma / sqrt(moving_variance + epsilon), which
the layer before it can absorb: W' = W * a (per output channel) and
bias' = (bias - moving_mean) * a + beta. The folded model computes the same outputs
with fewer operations (for serving). Works on every Keras backend, for our layer and
Keras', in Functional and Sequential models, nested ones included.

A BN is folded only where that is exact; every other one is kept, named with the reason
(`fold_report`), never folded into the wrong place: a BN called more than once, one
whose feature axis is not its producer's channel axis, one after a layer that is used
elsewhere too, that applies an activation of its own, or that holds its channels on
another axis (transposed convolutions).
"""

from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np

from bn_keras import keras_compat
from bn_keras.errors import InvalidSetting
from bn_keras.layers.batch_normalization import BN_TYPES, batch_norm_layers

log = logging.getLogger(__name__)

# Layers whose output channels BN can be folded into: their kernel's last axis (the
# pointwise kernel of a separable convolution; input channel x multiplier for a depthwise
# one) holds them.
FOLDABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
            keras.layers.Conv3D, keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
            keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
# Transposed convolutions hold their output channels on another axis: not folded.
_NOT_FOLDED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)


@keras.saving.register_keras_serializable(package="bn_keras", name="FoldedBatchNorm")
class FoldedBatchNorm(keras.layers.Layer):
    """What a BN layer becomes once folded into the layer before it: the identity.

    (keras.layers.Identity would do, but a BN node in a functional graph is
    called with `mask=`, which Identity does not accept.)
    """

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


@dataclasses.dataclass(frozen=True)
class FoldReport:
    """What `fold_batch_norm` folds and keeps, nested models included (their layers named
    `outer/inner`): (producer, BN) name pairs, and each kept BN with the reason."""

    folded: tuple[tuple[str, str], ...]
    kept: dict[str, str]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """One model level's folds: (producer layer, BN layer) pairs, and kept BN -> reason."""

    pairs: tuple[tuple[keras.layers.Layer, keras.layers.Layer], ...]
    kept: dict[str, str]


def foldable_pairs(model: keras.Model) -> list[tuple[keras.layers.Layer, keras.layers.Layer]]:
    """(producer, BN) pairs of `model`'s own level where the BN directly and solely follows
    a layer it folds into."""
    return list(_plan(model).pairs)


def fold_report(model: keras.Model) -> FoldReport:
    """What `fold_batch_norm(model)` folds and keeps, and why each kept BN stays."""
    _check_foldable_model(model)
    if not _has_graph(model):
        return FoldReport((), {layer.name: "the model is subclassed: no graph to fold in"
                               for layer in batch_norm_layers(model)})
    plan = _plan(model)
    folded = [(p.name, bn.name) for p, bn in plan.pairs]
    kept = dict(plan.kept)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner = fold_report(layer)
            folded += [(f"{layer.name}/{p}", f"{layer.name}/{b}") for p, b in inner.folded]
            kept.update({f"{layer.name}/{k}": v for k, v in inner.kept.items()})
    return FoldReport(tuple(folded), kept)


def fold_batch_norm(model: keras.Model, dtype: str | None = None) -> keras.Model:
    """A copy of `model` with each inference-mode BN folded into the layer before it.

    W' = W * gamma / sqrt(var + eps) per output channel, and
    b' = (b - mean) * gamma / sqrt(var + eps) + beta, computed in float64; the BN
    becomes an identity (FoldedBatchNorm). Into: Dense, Conv1D/2D/3D, DepthwiseConv1D/2D
    (output channel = input channel x multiplier) and SeparableConv1D/2D (its pointwise
    kernel), when the BN is called once, directly and solely follows that layer, normalizes
    its channel axis (`axis=1` after a `channels_first` convolution) and the layer applies
    no activation of its own. Every other BN is kept as it is and named in a log line
    with the reason (`fold_report`). Nested models are folded too; a subclassed model is
    returned as it is. The model itself is left unchanged.

    `dtype`: the copy's dtype policy for every layer (e.g. "float32" to serve a model
    trained under mixed precision in float32); None keeps each layer's. Under mixed
    precision the folded layer rounds W' to the compute dtype where the unfolded one
    rounded W, so the two differ by that rounding (docs/tools.md gives the measured size).
    """
    _check_foldable_model(model)
    if not _has_graph(model):
        for name, reason in fold_report(model).kept.items():
            log.info("not folded: %s (%s)", name, reason)
        return model
    plan = _plan(model)
    producers = {p.name: bn for p, bn in plan.pairs}
    folded_bns = {bn.name for _, bn in plan.pairs}
    for name, reason in plan.kept.items():
        log.info("not folded: %s (%s)", name, reason)
    nested: dict[str, keras.Model] = {}

    def clone(layer):
        if layer.name in folded_bns:
            return FoldedBatchNorm(name=layer.name, dtype=dtype or layer.dtype_policy)
        if isinstance(layer, keras.Model):
            nested[layer.name] = fold_batch_norm(layer, dtype)
            return nested[layer.name]
        config = layer.get_config()
        if layer.name in producers:
            config["use_bias"] = True
        if dtype is not None and "dtype" in config:
            config["dtype"] = dtype
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name in folded_bns or layer.name in nested or not layer.weights:
            continue  # an identity now, folded with its own weights, or nothing to copy
        target = folded.get_layer(layer.name)
        if layer.name in producers:
            weights = folded_weights(layer, producers[layer.name])
            target.set_weights([weights[w.name] for w in target.weights])
        else:
            target.set_weights(layer.get_weights())
    return folded


def _check_foldable_model(model) -> None:
    batch_norm_layers(model)  # refuses what is not a Keras model or layer
    if _has_graph(model) and not model.built:
        raise InvalidSetting(
            f"fold_batch_norm: model {model.name!r} is not built (a Sequential without an "
            "Input, never called), so it has no graph to fold in yet: give it a "
            "keras.Input or call it on data first.")


def _has_graph(model) -> bool:
    """Functional and Sequential models have a graph of layers to fold in; subclassed
    ones do not."""
    return isinstance(model, keras_compat.graph_model_types())


def _plan(model: keras.Model) -> _Plan:
    pairs, kept = [], {}
    for layer in getattr(model, "layers", []):
        if isinstance(layer, BN_TYPES):
            reason = _why_not_foldable(layer)
            if reason is None:
                pairs.append((keras_compat.producer(layer.input), layer))
            else:
                kept[layer.name] = reason
    return _Plan(tuple(pairs), kept)


def _why_not_foldable(bn) -> str | None:
    """None if `bn` folds exactly into the layer before it, else why not."""
    calls = len(keras_compat.calls(bn))
    if calls != 1:
        return (f"it is called {calls} times in the graph; folding it into one producer "
                "would change the other calls")
    rank = len(bn.input.shape)
    producer = keras_compat.producer(bn.input)
    if isinstance(producer, _NOT_FOLDED):
        return f"it follows {producer.name}, a transposed convolution"
    if not isinstance(producer, FOLDABLE):
        what = "the input" if producer is None else f"{producer.name} ({type(producer).__name__})"
        return f"it follows {what}, not a dense or convolution layer"
    channels_first = getattr(producer, "data_format", "channels_last") == "channels_first"
    channel_axis = 1 if channels_first else rank - 1
    if bn.axis % rank != channel_axis:
        return (f"its feature axis {bn.axis} is not the channel axis of {producer.name} "
                f"({'axis 1, channels_first' if channels_first else 'the last axis'}): it "
                "normalizes other features than that layer's outputs")
    activation = getattr(producer.activation, "__name__", "an activation")
    if activation != "linear":
        return f"it follows {producer.name}, which applies {activation} before it"
    if len(keras_compat.calls(producer)) != 1 or len(keras_compat.consumers(producer)) != 1:
        return f"{producer.name} is called twice, or its output also goes elsewhere"
    if keras_compat.misplaces_channels_first_bias(producer, bn.input.shape):
        return (f"{producer.name} is channels_first and its output's last axis has as many "
                "entries as it has filters: Keras 3.15 on TensorFlow adds such a layer's "
                "bias along the last axis (an upstream bug), so a folded bias would land "
                "there")
    return None


def folded_weights(producer, bn) -> dict[str, np.ndarray]:
    """The producer's weights, by name, with the BN's affine map folded into its output
    channels (a bias added where it had none), computed in float64."""
    weights = {w.name: _float64(w) for w in producer.weights}
    name = "pointwise_kernel" if "pointwise_kernel" in weights else "kernel"
    kernel = weights[name]
    depthwise = isinstance(producer, (keras.layers.DepthwiseConv1D,
                                      keras.layers.DepthwiseConv2D))
    channels_shape = kernel.shape[-2:] if depthwise else kernel.shape[-1:]  # in x multiplier
    channels = int(np.prod(channels_shape))
    gamma = _float64(bn.gamma) if bn.scale else np.ones(channels)
    beta = _float64(bn.beta) if bn.center else np.zeros(channels)
    scale = gamma / np.sqrt(_float64(bn.moving_variance) + bn.epsilon)
    weights[name] = kernel * scale.reshape(channels_shape)
    bias = weights.get("bias", np.zeros(channels))
    weights["bias"] = (bias - _float64(bn.moving_mean)) * scale + beta
    return {k: v.astype(np.float32) for k, v in weights.items()}


def _float64(variable) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable).astype(np.float64)
