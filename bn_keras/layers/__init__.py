"""Our BatchNormalization layer, a drop-in for `keras.layers.BatchNormalization`, and what
to do with BN layers in a trained model.

    from bn_keras.layers import BatchNormalization

- `batch_normalization`: the layer (its fast paths per backend: bn_keras.backends);
- `folding`: inference-mode BN folded into the conv or dense layer before it.

`BN_TYPES` is both BN layers a model may hold, ours and Keras'.
"""

from bn_keras.layers.batch_normalization import BN_TYPES, BatchNormalization
from bn_keras.layers.folding import FoldedBatchNorm, fold_batch_norm, foldable_pairs

__all__ = ["BN_TYPES", "BatchNormalization", "FoldedBatchNorm", "fold_batch_norm",
           "foldable_pairs"]
