"""Loading `.keras` files that hold the package's own classes."""

from __future__ import annotations

import os
import zipfile

import keras

from bn_keras.errors import DamagedFile, NotFound


def load_model(path: str, **kwargs) -> keras.Model:
    """`keras.models.load_model(path, **kwargs)` with every class of the package that a
    saved model may hold registered first: our BatchNormalization, FoldedBatchNorm, the
    models' ZeroPadShortcut and TutorialLeNet, and the label-smoothing loss.

    Keras' `safe_mode` stays on: a file holding code (a Lambda layer's bytecode) is
    refused, so loading a `.keras` file runs only the classes registered here and
    Keras' own. A file that cannot be loaded raises NotFound or DamagedFile, in one
    line.
    """
    # Importing these registers the classes Keras looks up by name.
    import bn_keras.layers.batch_normalization  # noqa: F401 - BatchNormalization
    import bn_keras.layers.folding  # noqa: F401 - FoldedBatchNorm
    import bn_keras.losses  # noqa: F401 - SmoothedSparseCrossentropy
    import bn_keras.models.lenet  # noqa: F401 - TutorialLeNet
    import bn_keras.models.resnet  # noqa: F401 - ZeroPadShortcut

    if not os.path.isfile(path):
        raise NotFound(f"no model file at {str(path)!r}.")
    try:
        return keras.models.load_model(path, **kwargs)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DamagedFile(str(path), f"Keras cannot load it: {reason[:300]}",
                          "save or export the model again") from None
