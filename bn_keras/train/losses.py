"""A run's loss: cross-entropy from logits, with optional label smoothing
(bn_keras.losses.SmoothedSparseCrossentropy)."""

from __future__ import annotations

import keras

from bn_keras.losses import SmoothedSparseCrossentropy
from bn_keras.train.config import TrainConfig


def make_loss(config: TrainConfig) -> keras.losses.Loss:
    if config.label_smoothing:
        return SmoothedSparseCrossentropy(config.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
