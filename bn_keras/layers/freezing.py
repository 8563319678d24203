"""Freezing BN for fine-tuning: BN layers in inference mode, their weights fixed."""

from __future__ import annotations

import logging
import warnings

import keras

from bn_keras.layers.batch_normalization import batch_norm_layers

log = logging.getLogger(__name__)


def freeze_batch_norm(model: keras.Model) -> list[str]:
    """Puts every BN layer of `model` (ours or Keras', nested models included) in inference
    mode with its weights frozen; returns their names. Compile the model afterwards.

    This is what `trainable = False` means for a BN layer in Keras (and in our layer):
    not only are gamma and beta no longer trained, the layer also normalizes with its
    moving statistics and stops updating them, also inside `fit` (`training=True`).
    That is what fine-tuning with small batches wants (timm's `freeze_batch_norm_2d`,
    PyTorch's `module.eval()`): the statistics of the data the model was trained on,
    not those of each small batch.

    A model compiled before (and trained, or loaded compiled by `load_model`) keeps its
    compiled step, which still trains BN on TensorFlow and fails on JAX: this warns, and
    the next `compile` takes the frozen layers into account (load, freeze, then compile
    is the intended order, so this warns rather than refuses).
    """
    layers = batch_norm_layers(model)
    for layer in layers:
        layer.trainable = False
    if getattr(model, "compiled", False) and layers:
        message = (f"freeze_batch_norm: {model.name} was compiled before its {len(layers)} BN "
                   "layers were frozen; compile it again before training, or `fit` keeps "
                   "training them (TensorFlow) or fails (JAX).")
        warnings.warn(message, UserWarning, stacklevel=2)
        log.warning("%s", message)
    return [layer.name for layer in layers]
