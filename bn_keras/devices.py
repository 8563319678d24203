"""The device the active Keras backend computes on, named for reports."""

from __future__ import annotations

import platform

import keras


def describe() -> str:
    """'NVIDIA H200' (the accelerator's own name) where the backend uses one, else 'CPU (...)'."""
    backend = keras.config.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return device.device_kind
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"CPU ({platform.processor() or platform.machine()})"
