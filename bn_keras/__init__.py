"""bn_keras: Batch Normalization for Keras 3 / TensorFlow that can be used, checked and studied."""

from bn_keras.layers import BatchNormalization

__all__ = ["BatchNormalization"]
__version__ = "0.1.0"
