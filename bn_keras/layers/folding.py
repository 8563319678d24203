"""Folding inference-mode BN into the convolution or dense layer before it.

Once training is over, BN is an affine map per channel,
y = (x - moving_mean) * a + beta with a = gamma / sqrt(moving_variance + epsilon), which
the layer before it can absorb: W' = W * a (per output channel) and
bias' = (bias - moving_mean) * a + beta. The folded model computes the same outputs
with fewer operations (for serving). Works on every Keras backend, for our layer and
Keras', in Functional and Sequential models, nested ones included.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

from bn_keras import keras_compat
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


def fold_plan(model: keras.Model) -> dict[str, Any]:
    """Which BN layers of `model` (at its own level) fold into which producer, and why the
    others are kept: {"pairs": [(producer, bn), ...], "kept": {bn name: reason}}."""
    pairs, kept = [], {}
    for layer in getattr(model, "layers", []):
        if isinstance(layer, BN_TYPES):
            reason = _why_not_foldable(layer)
            if reason is None:
                pairs.append((_producer(layer), layer))
            else:
                kept[layer.name] = reason
    return {"pairs": pairs, "kept": kept}


def foldable_pairs(model: keras.Model) -> list[tuple[keras.layers.Layer, keras.layers.Layer]]:
    """(producer, BN) pairs where the BN directly and solely follows a layer it folds into."""
    return fold_plan(model)["pairs"]


def fold_report(model: keras.Model) -> dict[str, Any]:
    """What `fold_batch_norm(model)` folds and keeps, nested models included (their layers
    named `outer/inner`): {"folded": [[producer, bn], ...], "kept": {bn: reason}}."""
    if not _has_graph(model):
        return {"folded": [], "kept": {layer.name: "the model is subclassed: no graph to fold in"
                                       for layer in batch_norm_layers(model)}}
    plan = fold_plan(model)
    report: dict[str, Any] = {"folded": [[p.name, bn.name] for p, bn in plan["pairs"]],
                              "kept": dict(plan["kept"])}
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            inner = fold_report(layer)
            report["folded"] += [[f"{layer.name}/{p}", f"{layer.name}/{b}"]
                                 for p, b in inner["folded"]]
            report["kept"].update({f"{layer.name}/{k}": v for k, v in inner["kept"].items()})
    return report


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of `model` with each inference-mode BN folded into the layer before it.

    W' = W * gamma / sqrt(var + eps) per output channel, and
    b' = (b - mean) * gamma / sqrt(var + eps) + beta; the BN becomes an identity
    (FoldedBatchNorm). Into: Dense, Conv1D/2D/3D, DepthwiseConv1D/2D (output channel =
    input channel x multiplier) and SeparableConv1D/2D (its pointwise kernel), when the
    BN directly and solely follows it and the layer applies no activation of its own.
    A BN anywhere else (after a ReLU, an add, an activation inside the conv) is kept as
    it is; each kept one is named in a log line (`fold_report` returns them). Nested
    models are folded too; a subclassed model is returned as it is.
    """
    if not _has_graph(model):
        for name, reason in fold_report(model)["kept"].items():
            log.info("not folded: %s (%s)", name, reason)
        return model
    plan = fold_plan(model)
    producers = {p.name: bn for p, bn in plan["pairs"]}
    folded_bns = {bn.name for _, bn in plan["pairs"]}
    for name, reason in plan["kept"].items():
        log.info("not folded: %s (%s)", name, reason)
    nested: dict[str, keras.Model] = {}

    def clone(layer):
        if layer.name in folded_bns:
            return FoldedBatchNorm(name=layer.name)
        if isinstance(layer, keras.Model):
            nested[layer.name] = fold_batch_norm(layer)
            return nested[layer.name]
        config = layer.get_config()
        if layer.name in producers:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name in folded_bns or layer.name in nested or not layer.weights:
            continue  # an identity now, folded with its own weights, or nothing to copy
        target = folded.get_layer(layer.name)
        if layer.name in producers:
            weights = _folded_weights(layer, producers[layer.name])
            target.set_weights([weights[w.name] for w in target.weights])
        else:
            target.set_weights(layer.get_weights())
    return folded


def _has_graph(model) -> bool:
    """Functional and Sequential models have a graph of layers to fold in; subclassed
    ones do not."""
    return isinstance(model, keras_compat.graph_model_types())


def _producer(bn) -> keras.layers.Layer | None:
    return keras_compat.producer(getattr(bn, "input", None))


def _why_not_foldable(bn) -> str | None:
    """None if `bn` folds into the layer before it, else why not."""
    try:
        rank = len(bn.input.shape)
    except (AttributeError, ValueError):
        return "it is called more than once, or not in a graph"
    if bn.axis not in (-1, rank - 1):
        return f"its feature axis {bn.axis} is not the last"
    producer = _producer(bn)
    if isinstance(producer, _NOT_FOLDED):
        return f"it follows {producer.name}, a transposed convolution"
    if not isinstance(producer, FOLDABLE):
        what = "the input" if producer is None else f"{producer.name} ({type(producer).__name__})"
        return f"it follows {what}, not a dense or convolution layer"
    activation = getattr(producer.activation, "__name__", "an activation")
    if activation != "linear":
        return f"it follows {producer.name}, which applies {activation} before it"
    if len(keras_compat.calls(producer)) != 1 or len(keras_compat.consumers(producer)) != 1:
        return f"{producer.name} is called twice, or its output also goes elsewhere"
    return None


def _folded_weights(producer, bn) -> dict[str, np.ndarray]:
    """The producer's weights, by name, with the BN's affine map folded into its output
    channels (a bias added where it had none)."""
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
