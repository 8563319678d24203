"""Backends without a fast path (JAX, and any other Keras backend): the formulas as written.

On JAX the layer's `keras.ops` formulas are traced into one XLA program with
the rest of the training step, and XLA fuses their element-wise work and
reductions itself: measured on CPU (`benchmarks/bench_layer.py` under
`KERAS_BACKEND=jax`), our layer's jitted training step runs at the built-in's
speed, so a hand-written path would add code without a gain.

Replicas: Keras' JAX distribution (`keras.distribution.DataParallel`) jits the
step over the global batch and lets XLA insert the reductions, so the batch
statistics are already the global batch's, with or without `synchronized`.
"""

from __future__ import annotations


def takes(x, channel_axis: int, epsilon: float, training: bool) -> bool:
    return False


def batch_norm(x, gamma, beta, epsilon, channel_axis):
    raise NotImplementedError("no fast path on this backend")


def normalize(x, mean, variance, gamma, beta, epsilon, channel_axis):
    raise NotImplementedError("no fast path on this backend")


def replicas_in_sync() -> int:
    return 1


def sum_over_replicas(t):
    return t
