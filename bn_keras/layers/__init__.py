"""Our BatchNormalization layer, a drop-in for `keras.layers.BatchNormalization`, and the
tools for BN layers in a trained model (ours or Keras').

    from bn_keras.layers import BatchNormalization

- `batch_normalization`: the layer (its fast paths per backend: bn_keras.backends);
- `recalibration`: `recalibrate_batch_norm`, moving statistics re-estimated for the
  model's current weights;
- `freezing`: `freeze_batch_norm`, BN in inference mode with its weights fixed;
- `folding`: `fold_batch_norm`, inference-mode BN folded into the layer before it.

`BN_TYPES` is both BN layers a model may hold, ours and Keras'.
"""

from bn_keras.layers.batch_normalization import BN_TYPES, BatchNormalization, batch_norm_layers
from bn_keras.layers.folding import (
    FoldedBatchNorm,
    fold_batch_norm,
    fold_report,
    foldable_pairs,
)
from bn_keras.layers.freezing import freeze_batch_norm
from bn_keras.layers.recalibration import recalibrate_batch_norm

__all__ = ["BN_TYPES", "BatchNormalization", "FoldedBatchNorm", "batch_norm_layers",
           "fold_batch_norm", "fold_report", "foldable_pairs", "freeze_batch_norm",
           "recalibrate_batch_norm"]
