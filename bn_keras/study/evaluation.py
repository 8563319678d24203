"""Measurements of a study's trained networks beyond what training records: test accuracy
with batch statistics and with re-estimated statistics, and per-layer gradient norms at
initialization and after training."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from bn_keras import models, saving
from bn_keras.layers import recalibrate_batch_norm
from bn_keras.study.runner import Arm, run_dir
from bn_keras.train import diagnostics, training
from bn_keras.train.config import TrainConfig


def batch_statistics_accuracy(model_path: str, test: tf.data.Dataset) -> float:
    """Test accuracy of a saved model when BN normalizes each test batch with its own
    statistics (training mode, weights not updated) instead of the moving ones."""
    model = saving.load_model(model_path)
    correct = total = 0
    for x, y in test:
        logits = model(x, training=True)
        correct += int(np.sum(np.argmax(logits, -1) == y.numpy()))
        total += int(y.shape[0])
    return correct / total


# Re-estimating a study run's BN statistics: about this many unaugmented training images,
# in batches of the run's own batch size (the statistics BN saw in training).
RECALIBRATION_EXAMPLES = 10_000


def re_estimated_accuracy(model_path: str, train: tf.data.Dataset, test: tf.data.Dataset,
                          num_batches: int, variance: str = "batch") -> float:
    """Test accuracy of a saved model after its BN statistics are re-estimated for its
    final weights over the first `num_batches` batches of `train`
    (bn_keras.layers.recalibrate_batch_norm, with its `variance` convention)."""
    model = saving.load_model(model_path)
    recalibrate_batch_norm(model, train, num_batches=num_batches, variance=variance)
    return float(model.evaluate(test, verbose=0)[1])


def gradient_norm_rows(runs_dir: str, base: TrainConfig, arms: Sequence[Arm]) -> list[dict]:
    """Per-layer gradient norms on a fixed batch of validation images, at initialization
    (seed 0) and after training (the seed-0 run's final model), for every arm."""
    rows = []
    datasets = training.make_datasets(base)
    x, y = training.probe_batch(datasets.validation, base.batch_size)
    for arm in arms:
        config = arm.config(base, 0, "")
        keras.utils.set_random_seed(0)
        probes = {"init": models.build_model(config.model, config.bn, **config.model_options(1)),
                  "trained": saving.load_model(run_dir(runs_dir, arm.name, 0, "final.keras"))}
        for when, model in probes.items():
            for layer, norm in diagnostics.gradient_norms(model, x, y).items():
                rows.append({"arm": arm.name, "when": when, "layer": layer, "grad_norm": norm})
    return rows
