"""Checks one backend against both contracts: what the layer needs
(`bn_keras.backends.Backend`) and what the proof and benchmarks run
(`bn_keras.testing.harness.Harness`).

`check(backend, harness)` runs on the Keras backend the process runs on (Keras picks it
at import, so each backend is checked in a process of its own) and raises
AssertionError naming the first breach. Kernels are checked against the float64
NumPy formulas; training steps through the proof's own comparison
(bn_keras.testing.equivalence), which holds each step against Keras' layer and the
NumPy reference.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from bn_keras.backends import Backend
from bn_keras.layers import BatchNormalization
from bn_keras.testing import equivalence
from bn_keras.testing.harness import Harness

# (shape, channel axis): 2-D, small and large channels-last images, channels-first images.
KERNEL_INPUTS = (((16, 10), -1), ((4, 6, 6, 16), -1), ((8, 28, 28, 16), -1),
                 ((4, 16, 6, 6), 1))
STEP_CASES = (equivalence.Case((16, 10)), equivalence.Case((8, 6, 6, 16)))
TOLERANCE = 1e-5


def check(backend: Backend, harness: Harness) -> dict[str, Any]:
    """What was checked, by part; raises AssertionError at the first breach."""
    assert isinstance(backend.name, str) and backend.name, backend.name
    assert harness.name == backend.name, (harness.name, backend.name)
    device = harness.device_name()
    assert isinstance(device, str) and device, device
    return {"name": backend.name, "device": device, "kernels": _kernels(backend),
            "replicas": _replicas(backend), "steps": _steps(harness)}


def _kernels(backend: Backend) -> dict[str, str]:
    """Each kernel the backend offers for these inputs, against the four formulas."""
    rng = np.random.default_rng(0)
    taken = {}
    for shape, axis in KERNEL_INPUTS:
        x = (rng.normal(size=shape) * 2 + 3).astype(np.float32)
        channels = shape[axis]
        gamma, beta = (rng.uniform(0.5, 1.5, channels).astype(np.float32) for _ in range(2))
        for training in (True, False):
            kernel = backend.kernel(keras.ops.convert_to_tensor(x), axis % len(shape), 1e-3,
                                    training)
            name = f"{'x'.join(map(str, shape))} axis={axis} training={training}"
            if kernel is None:
                taken[name] = "general path"
                continue
            taken[name] = type(kernel).__name__
            _check_kernel(kernel, x, gamma, beta, axis % len(shape), training, name)
    return taken


def _check_kernel(kernel, x, gamma, beta, axis, training, name):
    y_exact, mean_exact, variance_exact = equivalence.numpy_batch_norm(x, gamma, beta, axis)
    tensor = keras.ops.convert_to_tensor
    if training:
        y, mean, variance = kernel.batch_norm(tensor(x), tensor(gamma), tensor(beta), 1e-3,
                                              axis)
        _close(mean, mean_exact, f"{name}: mean")
        _close(variance, variance_exact, f"{name}: biased variance")
        # gamma and beta may be None (scale=False, center=False): 1 and 0.
        plain, _, _ = kernel.batch_norm(tensor(x), None, None, 1e-3, axis)
        _close(plain, equivalence.numpy_batch_norm(x, np.ones_like(gamma),
                                                   np.zeros_like(beta), axis)[0],
               f"{name}: gamma and beta None")
    else:
        y = kernel.normalize(tensor(x), tensor(mean_exact.astype(np.float32)),
                             tensor(variance_exact.astype(np.float32)), tensor(gamma),
                             tensor(beta), 1e-3, axis)
    _close(y, y_exact, f"{name}: output")


def _replicas(backend: Backend) -> dict[str, Any]:
    """Outside any distribution: one replica, and its sum is the value itself."""
    replicas = backend.replicas_in_sync()
    assert replicas == 1, f"replicas_in_sync() is {replicas} outside any distribution"
    t = keras.ops.convert_to_tensor(np.arange(4, dtype=np.float32))
    _close(backend.sum_over_replicas(t), np.arange(4), "sum_over_replicas with one replica")
    return {"replicas_in_sync": replicas}


def _steps(harness: Harness) -> dict[str, Any]:
    """The training step (through the proof against Keras' layer and NumPy), `repeat`,
    the inference call and `wait`; a backend without gradients refuses steps."""
    try:
        harness.train_step(BatchNormalization(), compiled=False)
    except NotImplementedError as e:
        return {"train_step": f"refused: {e}"}
    results = {}
    for case in STEP_CASES:
        result = equivalence.compare(case, steps=3)
        assert result["passed"], result
        results[case.name] = "equals Keras' layer and the NumPy reference"
    # repeat=3 is three steps: the moving mean moves three times from 0.
    x = (np.random.default_rng(1).normal(size=(16, 10)) + 2).astype(np.float32)
    weights = np.ones_like(x)
    for compiled in (False, True):
        layer = BatchNormalization(momentum=0.5)
        layer.build(x.shape)
        y, grads = harness.train_step(layer, compiled=compiled, repeat=3)(x, weights)
        harness.wait((y, grads))
        assert sorted(grads) == ["beta", "gamma", "input"], sorted(grads)
        _close(layer.moving_mean, (1 - 0.5 ** 3) * x.mean(0), f"repeat=3 compiled={compiled}")
        infer = harness.infer_step(layer, compiled=compiled, repeat=2)(x)
        _close(infer, keras.ops.convert_to_numpy(layer(x, training=False)),
               f"infer_step compiled={compiled}")
    results["repeat and infer_step"] = "three steps per call; inference equals layer(x)"
    results["xla"] = _xla_steps(harness, x, weights)
    return results


def _xla_steps(harness: Harness, x, weights) -> str:
    """Steps compiled by XLA equal the plain ones, where the backend has XLA."""
    outputs = []
    for xla in (False, True):
        layer = BatchNormalization(momentum=0.5)
        layer.build(x.shape)
        try:
            y, grads = harness.train_step(layer, xla=xla)(x, weights)
        except NotImplementedError as e:
            return f"refused: {e}"
        outputs.append((y, grads["input"], layer.moving_variance))
    for plain, compiled in zip(*outputs, strict=True):
        _close(compiled, keras.ops.convert_to_numpy(plain), "a step compiled by XLA")
    return "equals the step without XLA"


def _close(actual, expected, what: str) -> None:
    actual = keras.ops.convert_to_numpy(actual).astype(np.float64)
    expected = np.asarray(expected, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected))))
    error = float(np.max(np.abs(actual - expected))) / scale
    assert error <= TOLERANCE, f"{what}: scaled error {error:.2e} > {TOLERANCE:g}"
