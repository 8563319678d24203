"""Freezing BN for fine-tuning: BN layers in inference mode, their weights fixed."""

from __future__ import annotations

import keras

from bn_keras.layers.batch_normalization import batch_norm_layers


def freeze_batch_norm(model: keras.Model) -> list[str]:
    """Puts every BN layer of `model` (ours or Keras', nested models included) in inference
    mode with its weights frozen; returns their names. Compile the model afterwards.

    This is what `trainable = False` means for a BN layer in Keras (and in our layer):
    not only are gamma and beta no longer trained, the layer also normalizes with its
    moving statistics and stops updating them, also inside `fit` (`training=True`).
    That is what fine-tuning with small batches wants (timm's `freeze_batch_norm_2d`,
    PyTorch's `module.eval()`): the statistics of the data the model was trained on,
    not those of each small batch.
    """
    layers = batch_norm_layers(model)
    for layer in layers:
        layer.trainable = False
    return [layer.name for layer in layers]
