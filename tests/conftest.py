"""Test-session setup: two logical CPU devices, so tf.distribute tests have replicas.

The split must happen before TensorFlow initializes its runtime, hence here,
at import time, before any test module runs.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import pytest  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHARED_TFDS = os.path.join(os.path.dirname(_REPO), "shared", "datasets", "tensorflow_datasets")


@pytest.fixture(scope="session")
def cifar10_dir():
    """The TFDS data directory holding the real CIFAR-10, or skip the test."""
    for candidate in (os.environ.get("TFDS_DATA_DIR"), _SHARED_TFDS):
        if candidate and os.path.isdir(os.path.join(candidate, "cifar10")):
            return candidate
    pytest.skip("real CIFAR-10 is not prepared (set TFDS_DATA_DIR)")


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One 2-replica MirroredStrategy over the logical CPUs, shared by every test.

    Several MirroredStrategy objects in one process reuse collective instance
    keys, and a second one's all-reduce then meets the first one's shapes.
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2
    return tf.distribute.MirroredStrategy(devices)


def _load_script(folder, name):
    """Imports `folder/name.py` of the repository as a module."""
    import importlib.util

    path = os.path.join(_REPO, folder, f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def experiment():
    """Imports an experiments/ script as a module: experiment("compare_bn").run(...)."""
    return lambda name: _load_script("experiments", name)


@pytest.fixture
def benchmark_script():
    """Imports a benchmarks/ script as a module: benchmark_script("bench_peer")."""
    return lambda name: _load_script("benchmarks", name)
