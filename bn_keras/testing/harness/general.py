"""Keras backends without gradients (NumPy, OpenVINO, ...): no steps for the proof."""

from __future__ import annotations

import keras

from bn_keras.testing.harness import cpu_name


class GeneralHarness:
    """Refuses steps (no gradients); one CPU."""

    def __init__(self, name: str):
        self.name = name

    def train_step(self, layer, mask=None, compiled=False, repeat=1, xla=False):
        raise NotImplementedError(f"no training step on Keras' {self.name} backend: it has "
                                  "no gradients; use tensorflow, jax or torch.")

    def infer_step(self, layer, mask=None, compiled=False, repeat=1, xla=False):
        raise NotImplementedError(f"no inference step on Keras' {self.name} backend.")

    def wait(self, result) -> None:
        pass

    def device_name(self) -> str:
        return cpu_name()


HARNESS = GeneralHarness(keras.config.backend())
