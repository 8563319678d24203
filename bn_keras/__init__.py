"""bn_keras: Batch Normalization for Keras 3 that can be used, checked and studied.

The wings, each a sub-package:

- `bn_keras.layers`: our BatchNormalization (a drop-in for Keras'), and the BN tools:
  `recalibrate_batch_norm`, `freeze_batch_norm`, `fold_batch_norm`;
- `bn_keras.doctor`: `diagnose_batch_norm`, what is wrong with a model's BN layers, what
  it costs and how to fix it, and `repair_batch_norm`;
- `bn_keras.backends`: what the layer does faster on each Keras backend;
- `bn_keras.models`: the tutorial's networks and ResNet-20, with a BN switch;
- `bn_keras.data`: CIFAR-10 (tensorflow-datasets) and synthetic data as tf.data pipelines;
- `bn_keras.train`: `run(TrainConfig) -> RunResult`, resumable, with TensorBoard diagnostics;
- `bn_keras.study`: the BN study and the hyperparameter search;
- `bn_keras.serve`: SavedModels for TF Serving, and image files as their input;
- `bn_keras.testing`: the proof that our layer equals Keras', and timing helpers.

Names and sub-packages here load on first use (`bn_keras.layers` needs no import of its
own), so that `bn_keras.cli` can quiet TensorFlow before anything imports it.
"""

from bn_keras import lazy

__version__ = "0.2.0.dev0"

# Public name -> the module that defines it.
_PUBLIC = {
    "BatchNormalization": "bn_keras.layers.batch_normalization",
    "recalibrate_batch_norm": "bn_keras.layers.recalibration",
    "freeze_batch_norm": "bn_keras.layers.freezing",
    "fold_batch_norm": "bn_keras.layers.folding",
    "fold_report": "bn_keras.layers.folding",
    "load_model": "bn_keras.saving",
    "diagnose_batch_norm": "bn_keras.doctor.diagnosis",
    "repair_batch_norm": "bn_keras.doctor.diagnosis",
}
SUBPACKAGES = ("backends", "data", "doctor", "layers", "models", "serve", "study", "testing",
               "train")
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy.exports(__name__, globals(), _PUBLIC, SUBPACKAGES)
