"""Loading `.keras` files that hold the package's own classes."""

from __future__ import annotations

import keras


def load_model(path: str, **kwargs) -> keras.Model:
    """`keras.models.load_model(path, **kwargs)` with every class of the package that a
    saved model may hold registered first: our BatchNormalization, FoldedBatchNorm, the
    models' ZeroPadShortcut and TutorialLeNet, and the label-smoothing loss. Keras'
    `safe_mode` stays on: a file that would run arbitrary code is refused."""
    import bn_keras.models  # noqa: F401 - BatchNormalization, FoldedBatchNorm, the models'
    import bn_keras.train.losses  # noqa: F401 - SmoothedSparseCrossentropy

    return keras.models.load_model(path, **kwargs)
