"""Test-session setup and the fixtures every test module shares.

TensorFlow's CPU is split into two logical devices, so tf.distribute tests have
replicas. The split must happen before TensorFlow initializes its runtime, hence
here, at import time, before any test module runs.

Markers (pyproject.toml) say what a test does, not how long it takes: `slow` for
anything that trains a model, starts a process or reads the real data; the fast
lane is `python -m pytest -m "not slow"`.
"""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHARED_TFDS = os.path.join(os.path.dirname(REPO), "shared", "datasets", "tensorflow_datasets")


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


class Scripts:
    """Runs the repository's scripts as a user would: each in a fresh Python process, from
    the repository root, with this checkout's bn_keras first on the path and a user's
    environment (not this session's TensorFlow log level).

    A script is named by its path without `.py` ("experiments/train"). `prelude` is
    Python run first in the same process (to patch something, or to simulate a missing
    package); with no script, the prelude alone is the program.
    """

    root = REPO

    def path(self, script: str) -> str:
        return os.path.join(REPO, f"{script}.py")

    def command(self, script: str | None, *args: str, prelude: str | None = None) -> list[str]:
        if prelude is None:
            return [sys.executable, self.path(script), *args]
        if script is None:
            return [sys.executable, "-c", prelude, *args]
        code = "\n".join(["import runpy, sys", prelude,
                          f"sys.argv = {[self.path(script), *args]!r}",
                          f"runpy.run_path({self.path(script)!r}, run_name='__main__')"])
        return [sys.executable, "-c", code]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
        return {**env, **extra}

    def run(self, script: str | None, *args: str, prelude: str | None = None,
            env: dict[str, str] | None = None, cwd: str = REPO,
            timeout: float = 600) -> subprocess.CompletedProcess:
        """Runs it to the end; its output as text."""
        return subprocess.run(self.command(script, *args, prelude=prelude), cwd=cwd,
                              env=self.env(**(env or {})), capture_output=True, text=True,
                              timeout=timeout)

    def run_group(self, script: str | None, *args: str, env: dict[str, str] | None = None,
                  timeout: float = 600) -> subprocess.CompletedProcess:
        """`run`, in a process group of its own that is killed at the end, whatever
        happens: nothing the script started (replica processes) outlives it."""
        import signal

        command = self.command(script, *args)
        proc = subprocess.Popen(command, cwd=REPO, env=self.env(**(env or {})),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if proc.returncode is None:
                proc.communicate()
        return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)

    def start(self, script: str | None, *args: str, prelude: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """Starts it and returns at once (for signals and kills), its output piped as text."""
        return subprocess.Popen(self.command(script, *args, prelude=prelude), cwd=REPO,
                                env=self.env(**(env or {})), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run_all(self, invocations: list[tuple[str, ...]], workers: int = 4
                ) -> dict[tuple[str, ...], subprocess.CompletedProcess]:
        """Runs short invocations, (script, *args) each, a few at a time. Most of such a run
        is TensorFlow's import, one core's work: on two cores, four at a time take about
        half as long as one by one."""
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            done = pool.map(lambda invocation: self.run(*invocation, timeout=300), invocations)
            return dict(zip(invocations, done, strict=True))


@pytest.fixture(scope="session")
def scripts():
    return Scripts()


def _load_script(script: str):
    """Imports a script of the repository (its path without `.py`) as a module."""
    import importlib.util

    name = os.path.basename(script)
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, f"{script}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load_script():
    """Imports a script as a module: load_script("experiments/compare_bn").run(...)."""
    return _load_script


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


def wait_until(condition, what: str, timeout: float = 300) -> None:
    """Polls `condition()` until it holds; fails naming `what` after `timeout` seconds.
    Tests wait for a state (an epoch committed, a file written), never for a time."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def wait_for():
    """wait_for(condition, what, timeout=300): see `wait_until`."""
    return wait_until


@pytest.fixture
def tensorboard_server():
    """Starts the real `tensorboard` on a free 127.0.0.1 port: server(logdir) -> base URL.
    Every server started is stopped by its pid at the end of the test."""
    import contextlib

    from bn_keras.testing import tensorboard_server

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


def pytest_itemcollected(item):
    """A proof (marked `proof`) runs in CI's second stage: `-m extra` selects it."""
    if item.get_closest_marker("proof"):
        item.add_marker(pytest.mark.extra)


def pytest_collection_modifyitems(config, items):
    """Without `-m`, the grids and multi-process proofs are left to CI's second stage, so
    the README's test command stays within its time; any `-m` chooses for itself."""
    if config.getoption("markexpr"):
        return
    proofs = [item for item in items if item.get_closest_marker("proof")]
    if proofs:
        config.hook.pytest_deselected(items=proofs)
        items[:] = [item for item in items if not item.get_closest_marker("proof")]
