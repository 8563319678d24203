"""The loss classes a saved model may hold: cross-entropy from logits with label smoothing.

Registered for Keras serialization, so a `.keras` file compiled with it loads
(bn_keras.saving) without the training package.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="bn_keras", name="SmoothedSparseCrossentropy")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy from logits against integer labels smoothed by `label_smoothing`:
    the target puts 1 - eps on the label and eps spread evenly over all classes
    (Szegedy et al., 2016), as `CategoricalCrossentropy(label_smoothing=eps)` on one-hot
    labels, which Keras' sparse loss does not offer."""

    def __init__(self, label_smoothing: float = 0.0, name="smoothed_sparse_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        log_probs = keras.ops.log_softmax(keras.ops.cast(y_pred, "float32"), axis=-1)
        labels = keras.ops.expand_dims(keras.ops.cast(y_true, "int32"), -1)
        nll = -keras.ops.squeeze(keras.ops.take_along_axis(log_probs, labels, axis=-1), -1)
        uniform = -keras.ops.mean(log_probs, axis=-1)
        return (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
