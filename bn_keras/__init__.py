"""bn_keras: Batch Normalization for Keras 3 / TensorFlow that can be used, checked and studied.

`bn_keras.BatchNormalization` is our layer (`bn_keras.layers`). Submodules load
on first use, so `bn_keras.cli` can quiet TensorFlow before TensorFlow starts.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["BatchNormalization"]


def __getattr__(name):
    if name == "BatchNormalization":
        return importlib.import_module("bn_keras.layers").BatchNormalization
    raise AttributeError(f"module 'bn_keras' has no attribute {name!r}")
