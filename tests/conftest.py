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


@pytest.fixture
def script_flags():
    """Defines a script's absl flags and parses argv: script_flags(module, argv) -> FLAGS.
    The flags are removed again afterwards, so scripts sharing flag names can be tested."""
    from absl import flags

    defined = []

    def define(module, argv):
        before = set(flags.FLAGS)
        module.define_flags()
        defined.extend(set(flags.FLAGS) - before)
        flags.FLAGS(argv)
        return flags.FLAGS

    yield define
    flags.FLAGS.unparse_flags()
    for name in defined:
        delattr(flags.FLAGS, name)


@pytest.fixture(scope="session")
def scripts_at_once():
    """Runs short script invocations, a few at a time: {invocation: CompletedProcess}.

    Each invocation is (folder, script, *args). Most of such a run is TensorFlow's import,
    one core's work: on two cores, four at a time take about half as long as one by one.
    """
    import concurrent.futures
    import subprocess

    # As a user's shell has it: not this session's TF_CPP_MIN_LOG_LEVEL (set above).
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, os.environ.get("PYTHONPATH")) if p)

    def run(invocation, timeout=300):
        folder, name, *args = invocation
        return subprocess.run([sys.executable, os.path.join(_REPO, folder, f"{name}.py"), *args],
                              capture_output=True, text=True, timeout=timeout, cwd=_REPO, env=env)

    def run_all(invocations, workers=4):
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return dict(zip(invocations, pool.map(run, invocations), strict=True))

    return run_all


@pytest.fixture
def tensorboard_server():
    """Starts the real `tensorboard` on a free 127.0.0.1 port: server(logdir) -> base URL.
    Every server started is stopped by its pid at the end of the test."""
    import contextlib

    from bn_keras import tensorboard_server

    with contextlib.ExitStack() as stack:
        yield lambda logdir: stack.enter_context(tensorboard_server.serve(str(logdir)))


@pytest.fixture
def png_claiming():
    """PNG bytes whose header claims width x height RGB, followed by only one row of data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    def make(width: int, height: int) -> bytes:
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
        first_row = zlib.compress(b"\0" * (1 + 3 * width))  # filter byte + black pixels
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", first_row)
                + chunk(b"IEND", b""))

    return make


@pytest.fixture
def stop_at():
    """A Keras callback class: StopAt(epoch, batch) raises KeyboardInterrupt there, as
    Ctrl-C would; pass it to training.run(config, extra_callbacks=[...])."""
    import keras

    class StopAt(keras.callbacks.Callback):
        def __init__(self, epoch, batch):
            super().__init__()
            self.at = (epoch, batch)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) >= self.at:
                raise KeyboardInterrupt

    return StopAt
