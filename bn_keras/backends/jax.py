"""JAX: no fast path, since XLA fuses the layer's formulas itself.

The layer's `keras.ops` formulas are traced into one XLA program with the rest of
the training step, and XLA fuses their element-wise work and reductions: measured
on CPU (`benchmarks/bench_layer.py` under `KERAS_BACKEND=jax`), our layer's jitted
training step runs at the built-in's speed, so a hand-written path would add code
without a gain.

Replicas: Keras' JAX distribution (`keras.distribution.DataParallel`) jits the step
over the global batch and lets XLA insert the reductions, so the batch statistics
are already the global batch's, with or without `synchronized`.
"""

from __future__ import annotations

from bn_keras.backends.general import GeneralBackend

BACKEND = GeneralBackend("jax")
