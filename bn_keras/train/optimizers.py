"""A run's optimizer and learning-rate schedule, from its configuration."""

from __future__ import annotations

import keras

from bn_keras import keras_compat
from bn_keras.train.config import TrainConfig


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """A float, or a keras LearningRateSchedule over the whole run."""
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "constant":
        return config.learning_rate
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, total)
    warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(total - warmup, 1), warmup_target=config.learning_rate, warmup_steps=warmup)


# Weight decay applies to conv and dense kernels only: decaying BN's gamma and beta (or
# biases) toward zero fights the normalization rather than regularizing the network.
NO_WEIGHT_DECAY = ("gamma", "beta", "bias")


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The configured optimizer; with `ema_momentum`, it also keeps an exponential moving
    average of the trainable weights (bn_keras.train.averaging)."""
    lr = learning_rate(config, steps_per_epoch)
    decay = config.weight_decay or None
    ema = {"use_ema": True, "ema_momentum": config.ema_momentum} if config.ema_momentum else {}
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(lr, weight_decay=decay, **ema)
    else:
        optimizer = keras.optimizers.SGD(lr, momentum=config.sgd_momentum,
                                         nesterov=config.nesterov, weight_decay=decay, **ema)
    if decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    if ema:
        keras_compat.keep_averages_apart(optimizer)
    return optimizer
