"""Folding inference-mode BN into the convolution or dense layer before it.

For serving: once training is over, BN is an affine map per channel, which the
layer before it can absorb.
"""

from __future__ import annotations

import keras
import numpy as np

from bn_keras.layers.batch_normalization import BN_TYPES

FOLDABLE = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Dense)


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


def foldable_pairs(model: keras.Model) -> list[tuple[keras.layers.Layer, keras.layers.Layer]]:
    """(conv or dense, BN) pairs where the BN directly and solely follows the layer."""
    pairs = []
    for layer in model.layers:
        if not isinstance(layer, BN_TYPES) or layer.axis not in (-1, len(layer.input.shape) - 1):
            continue
        producer = layer.input._keras_history.operation
        if (isinstance(producer, FOLDABLE) and len(producer._outbound_nodes) == 1
                and not getattr(layer, "renorm", False)):
            pairs.append((producer, layer))
    return pairs


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of `model` with each inference-mode BN folded into the conv/dense before it.

    W' = W * gamma / sqrt(var + eps) (per output channel), and
    b' = (b - mean) * gamma / sqrt(var + eps) + beta; the BN becomes an identity.
    BN layers that follow anything else (a ReLU, an add) stay as they are.
    """
    pairs = foldable_pairs(model)
    producers = {p.name: bn for p, bn in pairs}
    folded_bns = {bn.name for _, bn in pairs}

    def clone(layer):
        if layer.name in folded_bns:
            return FoldedBatchNorm(name=layer.name)
        config = layer.get_config()
        if layer.name in producers:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = folded.get_layer(layer.name)
        if layer.name in folded_bns:
            continue
        if layer.name in producers:
            target.set_weights(_folded_weights(layer, producers[layer.name]))
        else:
            target.set_weights(layer.get_weights())
    return folded


def _folded_weights(producer, bn) -> list[np.ndarray]:
    kernel = _float64(producer.kernel)
    channels = kernel.shape[-1]
    bias = _float64(producer.bias) if producer.use_bias else np.zeros(channels)
    gamma = _float64(bn.gamma) if bn.scale else np.ones(channels)
    beta = _float64(bn.beta) if bn.center else np.zeros(channels)
    mean = _float64(bn.moving_mean)
    scale = gamma / np.sqrt(_float64(bn.moving_variance) + bn.epsilon)
    return [(kernel * scale).astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]


def _float64(variable) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable).astype(np.float64)
