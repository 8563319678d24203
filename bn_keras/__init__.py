"""bn_keras: Batch Normalization for Keras 3 that can be used, checked and studied.

The wings, each a sub-package:

- `bn_keras.layers`: our BatchNormalization (a drop-in for Keras'), and the BN tools:
  `recalibrate_batch_norm`, `freeze_batch_norm`, `fold_batch_norm`;
- `bn_keras.backends`: what the layer does faster on each Keras backend;
- `bn_keras.models`: the tutorial's networks and ResNet-20, with a BN switch;
- `bn_keras.data`: CIFAR-10 (tensorflow-datasets) and synthetic data as tf.data pipelines;
- `bn_keras.train`: `run(TrainConfig) -> metrics`, resumable, with TensorBoard diagnostics;
- `bn_keras.study`: the BN study and the hyperparameter search;
- `bn_keras.serve`: SavedModels for TF Serving, and image files as their input;
- `bn_keras.testing`: the proof that our layer equals Keras', and timing helpers.

Names here load their module on first use, so that `bn_keras.cli` can quiet TensorFlow
before anything imports it.
"""

import importlib

__version__ = "0.2.0.dev0"

# Public name -> the module that defines it.
_PUBLIC = {
    "BatchNormalization": "bn_keras.layers",
    "recalibrate_batch_norm": "bn_keras.layers",
    "freeze_batch_norm": "bn_keras.layers",
    "fold_batch_norm": "bn_keras.layers",
    "load_model": "bn_keras.saving",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'bn_keras' has no attribute {name!r}")
