"""Keras backends without a module of their own (NumPy, OpenVINO, ...): the formulas as
written, and one device."""

from __future__ import annotations

import keras


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


BACKEND = GeneralBackend(keras.config.backend())
