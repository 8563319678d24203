"""Keras backends without a module of their own (NumPy, OpenVINO, ...): the formulas as
written, one device, and no training step for the proof (they have no gradients)."""

from __future__ import annotations

import keras

from bn_keras.backends import cpu_name


class GeneralBackend:
    """No kernel of its own (the layer's general path) and one replica."""

    def __init__(self, name: str):
        self.name = name

    def kernel(self, x, channel_axis: int, epsilon: float, training: bool):
        return None

    def replicas_in_sync(self) -> int:
        return 1

    def sum_over_replicas(self, t):
        return t

    def train_step(self, layer, mask=None, compiled=False, repeat=1, xla=False):
        raise NotImplementedError(f"no training step on Keras' {self.name} backend: it has "
                                  "no gradients; use tensorflow, jax or torch.")

    def infer_step(self, layer, mask=None, compiled=False, repeat=1, xla=False):
        raise NotImplementedError(f"no inference step on Keras' {self.name} backend.")

    def wait(self, result) -> None:
        pass

    def device_name(self) -> str:
        return cpu_name()


BACKEND = GeneralBackend(keras.config.backend())
