"""tf.distribute strategies by name, as tensorflow/models' distribute_utils does it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from collections.abc import Iterator

import tensorflow as tf

from bn_keras import keras_compat
from bn_keras.errors import InvalidSetting, WorkerLost
from bn_keras.train.config import STRATEGIES

log = logging.getLogger(__name__)


def get_strategy(name: str = "auto", tpu: str | None = None,
                 devices: list[str] | None = None) -> tf.distribute.Strategy:
    """A tf.distribute strategy by name.

    - "auto": TensorFlow's default strategy: one device, the first GPU if there is
      one, else the CPU, and no distribution machinery around each step (at LeNet's
      small steps OneDeviceStrategy's cost 33% of the training speed, measured).
    - "one_device": OneDeviceStrategy on `devices[0]` (default: first GPU, else CPU).
    - "mirrored": MirroredStrategy over `devices` (default: all GPUs, else the CPU).
    - "multi_worker_mirrored": MultiWorkerMirroredStrategy configured by $TF_CONFIG.
    - "tpu": TPUStrategy on the TPU at `tpu` ("local" on a Cloud TPU VM, or a
      grpc:// address / TPU name).
    """
    if name not in STRATEGIES:
        raise InvalidSetting(f"Unknown strategy={name!r}; expected one of "
                             f"{', '.join(STRATEGIES)}.")
    if name == "auto":
        return tf.distribute.get_strategy()
    if name == "one_device":
        device = (devices or [_default_device()])[0]
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        return tf.distribute.MirroredStrategy(devices or gpus or None)
    if name == "multi_worker_mirrored":
        _check_tf_config()
        with _signals_stop_the_process():
            return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(tpu)


@contextlib.contextmanager
def _signals_stop_the_process() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP stop the process (the signals' default action) inside,
    and the handlers before are back afterwards.

    A MultiWorkerMirroredStrategy waits in C++ for its peers, holding Python's lock: no
    Python handler or thread runs until every worker has come, so a worker waiting for a
    peer that never comes would ignore every signal. The default action needs no Python.
    TensorFlow also installs a SIGTERM handler of its own there; restoring ours after
    puts the process's answer back.
    """
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.getsignal(s) for s in stops}
    try:
        for s in stops:
            signal.signal(s, signal.SIG_DFL)
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


# How TensorFlow's collectives fail when a peer worker has gone (killed, its machine
# lost): the connection is refused or reset, the collective is aborted or cancelled.
PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                 tf.errors.DeadlineExceededError)


@contextlib.contextmanager
def peers_watched(strategy: tf.distribute.Strategy, saved: str) -> Iterator[None]:
    """Under several workers, a peer's death (`PEER_FAILURES` inside) becomes WorkerLost, in
    one line that says what is `saved`; any other strategy is left alone."""
    several = (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
               and strategy.num_replicas_in_sync > 1)
    try:
        yield
    except PEER_FAILURES as e:
        if not several:
            raise
        reason = (str(e.message).strip().splitlines() or [type(e).__name__])[0][:200]
        raise WorkerLost(f"another worker of the run stopped ({type(e).__name__}: {reason}); "
                         f"this one stops too. {saved}") from None


def use_threads(threads: int) -> int:
    """Runs TensorFlow's ops with `threads` threads each and `threads` at a time (0: its
    default, one per core), if its runtime has not started; returns the setting in force.

    The setting changes a run's numbers by rounding (sums split differently), so a run
    records it; at LeNet's small steps one thread is 40% faster (measured: the threads'
    hand-offs cost more than the arithmetic they share).
    """
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if current == threads:
        return current
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime has started: a process sets this once
        log.info("note: TensorFlow already runs with %s threads per op in this process; "
                 "the run asked for %s and uses what the process has.",
                 current or "its default", threads or "the default")
        return current
    return threads


def _default_device() -> str:
    return "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"


def _check_tf_config() -> None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return  # a single worker: MultiWorkerMirroredStrategy runs alone
    try:
        config = json.loads(raw)
        config["cluster"]["worker"]
        config["task"]["index"]
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidSetting(
            f"TF_CONFIG is not valid multi-worker JSON ({e!r}): expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}.'
        ) from None


def _tpu_strategy(tpu: str | None) -> tf.distribute.Strategy:
    if not tpu:
        raise InvalidSetting("strategy='tpu' needs a TPU address: tpu='local' on a Cloud TPU "
                             "VM, or the TPU's name or grpc:// address.")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu="" if tpu == "local" else tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as e:  # noqa: BLE001 - any failure means "no usable TPU here"
        first_line = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise InvalidSetting(f"No TPU found at tpu={tpu!r}: {first_line}") from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True unless this is a non-chief worker of a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0
                                            and "chief" not in resolver.cluster_spec().as_dict())


def task_name(strategy: tf.distribute.Strategy) -> str:
    """This worker's task in its cluster, e.g. "worker1"."""
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type}{resolver.task_id}"


def _first_local(strategy: tf.distribute.Strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def build_from_first_replica(model) -> None:
    """Lets Keras 3.15's fit()/evaluate() start on a batch the replicas split unevenly.

    Keras' symbolic build reduces the first distributed batch with
    `strategy.reduce("MEAN", ...)`, which fails when the replicas' shares differ
    (a 75-image validation set on 2 replicas: "Inputs to operation AddN ... must
    have the same size and shape") and under several workers (keras-team/keras#20585).
    The build only needs shapes and dtypes, so it uses the first local replica's batch.
    """
    strategy = model.distribute_strategy
    keras_compat.build_from_first_replica(model, lambda v: _first_local(strategy, v))


def work_around_keras_multi_worker(model) -> None:
    """Lets Keras 3.15's fit()/evaluate() run under a multi-worker MultiWorkerMirroredStrategy.

    Two spots of Keras' TensorFlow trainer fail with several workers
    (keras-team/keras#20585): the symbolic build (`build_from_first_replica`), and
    the per-step logs, scalars, reduced with `axis=0` ("Invalid reduction dimension 0
    for input with 0 dimensions"): they are averaged over replicas with axis=None.
    """
    build_from_first_replica(model)
    keras_compat.patch_reduce_per_replica(_scalars_averaged_over_workers)


def _scalars_averaged_over_workers(original):
    """Keras' `reduce_per_replica`, with scalar logs averaged (axis=None) under a
    MultiWorkerMirroredStrategy."""
    def reduce_per_replica(values, strategy, reduction):
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or reduction not in (
                "auto", "mean"):
            return original(values, strategy, reduction)

        def reduce(value):
            # With one device per worker, per-replica values arrive as plain tensors.
            if _first_local(strategy, value).shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return tf.nest.map_structure(reduce, values)

    return reduce_per_replica


def workers_agree(model, strategy: tf.distribute.Strategy) -> bool:
    """Whether every replica of a strategy holds the same weights: a float64 fingerprint
    of the model's variables (their sums and sums of squares) gathered from every replica
    of every worker by the strategy's own collective, and compared. Synchronous training
    must keep them equal to the last bit; this is the check that it did."""
    import numpy as np

    weights = [np.asarray(w, np.float64) for w in model.get_weights()]
    fingerprint = tf.constant([[sum(float(w.sum()) for w in weights),
                                sum(float((w * w).sum()) for w in weights)]], tf.float64)
    @tf.function
    def gather():
        return strategy.gather(strategy.run(lambda: tf.identity(fingerprint)), axis=0)

    gathered = gather().numpy()
    return bool(np.all(gathered == gathered[0]))
