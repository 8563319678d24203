"""PyTorch: eager steps with torch.autograd, as Keras' torch trainer runs by default."""

from __future__ import annotations

import keras
import torch

from bn_keras.testing.harness import cpu_name, loss, repeated, weight_names


class TorchHarness:
    """Steps with torch.autograd; the GPU's name where there is one."""

    name = "torch"

    def train_step(self, layer, mask=None, compiled=False, repeat=1, xla=False):
        _no_xla(xla)
        mask = None if mask is None else keras.ops.convert_to_tensor(mask)

        def step(x, loss_weights):
            x = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
            y = layer(x, training=True, mask=mask)
            grads = torch.autograd.grad(loss(y, keras.ops.convert_to_tensor(loss_weights)),
                                        [x] + [v.value for v in layer.trainable_variables])
            return y.detach(), dict(zip(["input"] + weight_names(layer), grads, strict=True))

        return repeated(step, repeat)

    def infer_step(self, layer, mask=None, compiled=False, repeat=1, xla=False):
        _no_xla(xla)

        @torch.no_grad()
        def infer(x):
            return layer(x, training=False, mask=mask)

        return repeated(infer, repeat)

    def wait(self, result) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def device_name(self) -> str:
        return torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_name()


def _no_xla(xla: bool) -> None:
    if xla:
        raise NotImplementedError("no XLA on Keras' torch backend (use tensorflow or jax).")


HARNESS = TorchHarness()
