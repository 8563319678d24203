"""Our BatchNormalization layer, a drop-in for `keras.layers.BatchNormalization`, and the
tools for BN layers in a trained model (ours or Keras').

    from bn_keras.layers import BatchNormalization

- `batch_normalization`: the layer (its fast paths per backend: bn_keras.backends);
- `arguments`: the rules on its arguments (no Keras needed to check them);
- `recalibration`: `recalibrate_batch_norm`, moving statistics re-estimated for the
  model's current weights;
- `freezing`: `freeze_batch_norm`, BN in inference mode with its weights fixed;
- `folding`: `fold_batch_norm`, inference-mode BN folded into the layer before it.

`BN_TYPES` is both BN layers a model may hold, ours and Keras'. Names load their module
on first use (importing this package imports no Keras).
"""

from bn_keras import lazy

_PUBLIC = {
    "BN_TYPES": "bn_keras.layers.batch_normalization",
    "BatchNormalization": "bn_keras.layers.batch_normalization",
    "batch_norm_layers": "bn_keras.layers.batch_normalization",
    "FoldReport": "bn_keras.layers.folding",
    "FoldedBatchNorm": "bn_keras.layers.folding",
    "fold_batch_norm": "bn_keras.layers.folding",
    "fold_report": "bn_keras.layers.folding",
    "foldable_pairs": "bn_keras.layers.folding",
    "freeze_batch_norm": "bn_keras.layers.freezing",
    "Recalibration": "bn_keras.layers.recalibration",
    "recalibrate_batch_norm": "bn_keras.layers.recalibration",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy.exports(__name__, globals(), _PUBLIC)
