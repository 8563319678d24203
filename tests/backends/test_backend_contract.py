"""Every installed backend against both contracts: bn_keras.backends.Backend (what the
layer needs) and bn_keras.testing.harness.Harness (what the proof runs).

TensorFlow is checked here; JAX and PyTorch in their own processes (Keras picks its
backend at import), by tests/backends/backend_probe.py, in test_other_backends.py; the
general backend (Keras' NumPy and others) directly.
"""

import keras
import pytest

from bn_keras import backends
from bn_keras.backends import tensorflow as tf_backend
from bn_keras.backends.general import GeneralBackend
from bn_keras.testing import conformance, harness
from bn_keras.testing.harness.general import GeneralHarness


def test_tensorflow_backend_keeps_the_contract():
    backend = backends.current()
    assert backend.name == keras.config.backend() == "tensorflow"
    checked = conformance.check(backend, harness.current())
    kernels = checked["kernels"]
    # Channels-last inputs take TensorFlow's kernels, channels-first the general path.
    assert kernels["16x10 axis=-1 training=True"] == type(tf_backend.ROWS).__name__
    assert kernels["8x28x28x16 axis=-1 training=True"] == type(tf_backend.FUSED).__name__
    assert kernels["4x16x6x6 axis=1 training=True"] == "general path"
    assert set(checked["steps"]) == {"16x10 axis=-1", "8x6x6x16 axis=-1",
                                     "repeat and infer_step", "xla"}
    assert checked["steps"]["xla"] == "equals the step without XLA"


def test_tensorflow_chooses_while_running_when_the_batch_size_is_unknown():
    """Traced with an unknown batch size, the kernel decides fused or rows per call; both
    give the four formulas."""
    import numpy as np
    import tensorflow as tf

    from bn_keras.testing import equivalence

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 16], tf.float32)])
    def batch_norm(x):
        kernel = backends.current().kernel(x, 3, 1e-3, True)
        assert kernel is tf_backend.FUSED_OR_ROWS
        return kernel.batch_norm(x, None, None, 1e-3, 3)

    for batch in (8, 2):  # 100,352 elements (fused), 25,088 (rows)
        x = np.random.default_rng(batch).normal(size=(batch, 28, 28, 16)).astype(np.float32)
        y, mean, variance = batch_norm(x)
        y_exact, mean_exact, variance_exact = equivalence.numpy_batch_norm(
            x, np.ones(16), np.zeros(16))
        np.testing.assert_allclose(y, y_exact, atol=1e-4)
        np.testing.assert_allclose(variance, variance_exact, rtol=1e-4)


def test_general_backend_keeps_the_contract_without_steps():
    checked = conformance.check(GeneralBackend("numpy"), GeneralHarness("numpy"))
    assert set(checked["kernels"].values()) == {"general path"}
    assert checked["steps"]["train_step"].startswith("refused: no training step on Keras' numpy")


def test_a_backend_missing_a_kernel_output_is_caught():
    class Wrong(type(backends.current())):
        def kernel(self, x, channel_axis, epsilon, training):
            kernel = super().kernel(x, channel_axis, epsilon, training)
            if kernel is None or not training:
                return kernel

            class Unbiased:  # the variance PyTorch and fused kernels return: off by m/(m-1)
                def batch_norm(self, x, gamma, beta, epsilon, axis):
                    y, mean, variance = kernel.batch_norm(x, gamma, beta, epsilon, axis)
                    m = x.shape.num_elements() // x.shape[axis]
                    return y, mean, variance * (m / (m - 1))

            return Unbiased()

    with pytest.raises(AssertionError, match="biased variance"):
        conformance.check(Wrong(), harness.current())

