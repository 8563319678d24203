"""JAX: no fast path, since XLA fuses the layer's formulas itself.

The layer's `keras.ops` formulas are traced into one XLA program with the rest of
the training step, and XLA fuses their element-wise work and reductions: measured
on CPU (`benchmarks/bench_layer.py` under `KERAS_BACKEND=jax`), our layer's jitted
training step runs at the built-in's speed, so a hand-written path would add code
without a gain.

Replicas: none to count. Keras' JAX distribution (`keras.distribution.DataParallel`)
jits one step over the global batch, sharded along it across the devices, and XLA
inserts the reductions a mean over that axis needs: the batch statistics are the
global batch's, with or without `synchronized`, for our layer and Keras' alike
(bn_keras.testing.synchronized proves it on 2 and 4 CPU devices). JAX shards a batch
only evenly: a global batch the devices do not divide is refused.
"""

from __future__ import annotations

from bn_keras.backends.general import GeneralBackend

BACKEND = GeneralBackend("jax")
