"""What synchronized BN costs per training step: one replica against two, on each backend.

LeNet with our BN (bn_keras.models.lenet_cifar("custom")), training steps at a global
batch of --batch_size on synthetic CIFAR-shaped data, in three setups:

- 1 replica: the whole batch on one device;
- 2 replicas, BN per replica: the batch split in two, each replica normalizing with its
  own half's statistics (synchronized=False, what Keras' BN gives under tf.distribute
  and DDP);
- 2 replicas, BN synchronized: the global batch's statistics (synchronized=True).

TensorFlow: MirroredStrategy over two logical CPUs, `fit`. JAX: keras.distribution.
DataParallel over two CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=2),
`fit`; one program over the global batch, so its statistics are the global batch's
either way and it has no per-replica row. PyTorch: two gloo processes of one thread
each, DistributedDataParallel and a plain SGD loop; its one replica is one process with
every thread. The replicas share this machine's cores, so two are no faster than one:
the table measures what distribution and synchronization cost, not scaling. The cost of
synchronizing BN is the synchronized row minus the per-replica one. NCCL needs GPUs;
these are gloo's and XLA's CPU collectives.

Each backend runs in a process of its own (Keras picks its backend at import) and
times its setups in turn, round after round (bn_keras.testing.timing): median
milliseconds per step. Time it on a quiet machine (NOTES: PyTorch's threads collapse
when another process takes a core):

    python benchmarks/bench_sync.py --report=experiments/results/benchmarks/bench_sync.md
    python benchmarks/bench_sync.py --backends=torch --rounds=9
    python benchmarks/bench_sync.py --smoke     # tiny sizes: the script runs (about a minute)
"""

from __future__ import annotations

from bn_keras import cli

cli.quiet_tensorflow()

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

from bn_keras.errors import InvalidSetting  # noqa: E402

FLAGS = flags.FLAGS
BACKENDS = ("tensorflow", "jax", "torch")
SETUPS = (("1 replica", 1, "one device"), ("2 replicas", 2, "per replica"),
          ("2 replicas", 2, "synchronized"))
SMOKE = {"batch_size": 8, "steps": 3, "rounds": 1}


def define_flags() -> None:
    cli.define_report_flag("bench_sync")
    flags.DEFINE_list("backends", list(BACKENDS), f"Keras backends, of {', '.join(BACKENDS)}.")
    flags.DEFINE_integer("batch_size", 128, "Global batch size (each of 2 replicas: half).",
                         lower_bound=2)
    flags.DEFINE_integer("steps", 20, "Training steps per measurement (on TensorFlow and JAX, "
                         "all but the first are timed).", lower_bound=2)
    flags.DEFINE_integer("rounds", 5, "Interleaved measurement rounds; medians are reported.",
                         lower_bound=1)
    flags.DEFINE_integer("timeout_s", 900, "Time limit of each backend's process.",
                         lower_bound=1)
    flags.DEFINE_bool("smoke", False, "Tiny sizes (batch 8, 3 steps, 1 round): a check that "
                      "the script runs.")
    flags.DEFINE_enum("child", None, list(BACKENDS), "Internal: time this backend in this "
                      "process and write its JSON to --child_output.")
    flags.DEFINE_string("child_output", None, "Internal: the child's JSON file.")


def sizes() -> tuple[int, int, int]:
    """(global batch, steps per measurement, rounds)."""
    if FLAGS.smoke:
        return SMOKE["batch_size"], SMOKE["steps"], SMOKE["rounds"]
    if FLAGS.batch_size % 2:
        raise InvalidSetting(f"--batch_size={FLAGS.batch_size}: 2 replicas need an even "
                             "global batch.")
    return FLAGS.batch_size, FLAGS.steps, FLAGS.rounds


# ------------------------------------------------------------------ each backend, its process
def synthetic(images: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.normal(size=(images, 32, 32, 3)).astype(np.float32),
            rng.integers(0, 10, images).astype(np.int32))


def lenet(synchronized: bool):
    import keras

    from bn_keras import models

    keras.utils.set_random_seed(0)
    model = models.lenet_cifar("custom", synchronized=synchronized)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit_measure(model, x, y, batch: int, steps: int, scope=None):
    """A measure: ms per step of one `fit` epoch of `steps` batches (in `scope`, if any),
    from the end of its first step to the end of its last, so that the epoch's start
    (a distributed iterator under MirroredStrategy) is left out."""
    import contextlib

    import keras

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.start = time.perf_counter()
            elif batch == steps - 1:
                self.seconds = time.perf_counter() - self.start

    def measure() -> float:
        timer = Timer()
        with scope() if scope else contextlib.nullcontext():
            model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0,
                      callbacks=[timer])
        return timer.seconds / (steps - 1) * 1e3

    return measure


def tensorflow_samples(batch: int, steps: int, rounds: int) -> dict[str, list[float]]:
    import tensorflow as tf

    from bn_keras.testing import timing

    # Before TensorFlow's runtime starts: two logical CPUs for two replicas.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")])
    x, y = synthetic(batch * steps)
    measures = {"one device": fit_measure(lenet(False), x, y, batch, steps)}
    for statistics, synchronized in (("per replica", False), ("synchronized", True)):
        with strategy.scope():
            model = lenet(synchronized)
        measures[statistics] = fit_measure(model, x, y, batch, steps)
    return timing.interleaved(measures, rounds)


def jax_samples(batch: int, steps: int, rounds: int) -> dict[str, list[float]]:
    import jax
    import keras

    from bn_keras.testing import timing

    if len(jax.devices()) < 2:
        raise InvalidSetting("JAX sees one device: set XLA_FLAGS="
                             "--xla_force_host_platform_device_count=2 before it starts.")
    distribution = keras.distribution.DataParallel(devices=jax.devices()[:2])
    x, y = synthetic(batch * steps)
    with distribution.scope():
        model = lenet(True)
    return timing.interleaved({
        "one device": fit_measure(lenet(True), x, y, batch, steps),
        "synchronized": fit_measure(model, x, y, batch, steps, scope=distribution.scope),
    }, rounds)


def torch_samples(batch: int, steps: int, rounds: int) -> dict[str, list[float]]:
    from bn_keras.testing import synchronized

    return synchronized.torch_processes(2, torch_process, batch, steps, rounds)[0]


def torch_process(batch: int, steps: int, rounds: int) -> dict[str, list[float]]:
    """In each of 2 gloo processes: DDP steps on its half of each batch, unsynchronized and
    synchronized; rank 0 alone, with every thread, the one-replica steps."""
    import torch
    import torch.distributed as dist

    from bn_keras.testing import timing

    rank = dist.get_rank()
    x, y = synthetic(batch * steps)
    x, y = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    loss_fn = torch.nn.CrossEntropyLoss()

    def loop(model, trained, part: int, parts: int):
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                    lr=0.01, momentum=0.9)
        size = batch // parts

        def run() -> None:
            for step in range(steps):
                start = step * batch + part * size
                loss = loss_fn(trained(x[start:start + size], training=True),
                               y[start:start + size])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        return run

    def timed(run, threads: int | None = None):
        def measure() -> float:
            dist.barrier()
            shared = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            torch.set_num_threads(shared)
            dist.barrier()  # the other process waits here while rank 0 runs alone
            return seconds / steps * 1e3

        return measure

    single = lenet(False)
    measures = {"one device": timed(loop(single, single, 0, 1) if rank == 0 else lambda: None,
                                    threads=os.cpu_count())}
    for statistics, sync in (("per replica", False), ("synchronized", True)):
        model = lenet(sync)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        measures[statistics] = timed(loop(model, ddp, rank, 2))
    return timing.interleaved(measures, rounds)


def run_child(backend: str, output: str) -> None:
    from bn_keras.testing import harness

    batch, steps, rounds = sizes()
    samples = {"tensorflow": tensorflow_samples, "jax": jax_samples,
               "torch": torch_samples}[backend](batch, steps, rounds)
    import keras

    with open(output, "w") as f:
        json.dump({"backend": backend, "device": harness.current().device_name(),
                   "keras": keras.__version__, "samples": samples}, f)


# ------------------------------------------------------------------ the table
def child_samples(backend: str, directory: str, timeout: float) -> dict:
    """One backend's measurements, from a process of its own."""
    output = os.path.join(directory, f"{backend}.json")
    env = {**os.environ, "KERAS_BACKEND": backend}
    if backend == "jax":
        env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""),
                                     "--xla_force_host_platform_device_count=2"]).strip()
    command = [sys.executable, os.path.abspath(__file__), f"--child={backend}",
               f"--child_output={output}", f"--batch_size={FLAGS.batch_size}",
               f"--steps={FLAGS.steps}", f"--rounds={FLAGS.rounds}"]
    if FLAGS.smoke:
        command.append("--smoke")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not os.path.exists(output):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"bench_sync on {backend} failed (exit {proc.returncode}): {last}")
    with open(output) as f:
        return json.load(f)


def benchmark() -> None:
    import statistics as stats

    if FLAGS.child:
        run_child(FLAGS.child, FLAGS.child_output)
        return
    unknown = sorted(set(FLAGS.backends) - set(BACKENDS))
    if unknown:
        raise InvalidSetting(f"--backends: unknown {unknown}; expected some of "
                             f"{', '.join(BACKENDS)}.")
    batch, steps, rounds = sizes()
    with tempfile.TemporaryDirectory() as directory:
        results = [child_samples(b, directory, FLAGS.timeout_s)
                   for b in dict.fromkeys(FLAGS.backends)]
    print(f"LeNet with our BN, global batch {batch}, {steps} training steps per measurement, "
          f"median of {rounds} interleaved rounds; {os.cpu_count()} CPU cores shared by the "
          "replicas\n")
    print("| backend | setup | BN statistics | ms per step | min-max | vs 1 replica |")
    print("|---|---|---|---|---|---|")
    costs = []
    for result in results:
        samples = result["samples"]
        median = {name: stats.median(values) for name, values in samples.items()}
        for setup, _, name in SETUPS:
            if name not in samples:
                continue
            print(f"| {result['backend']} | {setup} | {name} | {median[name]:.2f} | "
                  f"{min(samples[name]):.2f}-{max(samples[name]):.2f} | "
                  f"{median[name] / median['one device']:.2f}x |")
        if "per replica" in median:
            cost = median["synchronized"] - median["per replica"]
            costs.append(f"| {result['backend']} | {cost:+.2f} | "
                         f"{cost / median['synchronized']:+.0%} |")
        else:
            costs.append(f"| {result['backend']} | - (statistics global either way) | - |")
    print("\nSynchronizing BN, per step: the synchronized row minus the per-replica row "
          "(noise included: read it against the min-max spreads)\n")
    print("| backend | ms per step | share of the synchronized step |")
    print("|---|---|---|")
    for line in costs:
        print(line)
    print("\n" + "; ".join(f"{r['backend']}: Keras {r['keras']}, {r['device']}"
                           for r in results))


TITLE = "Synchronized BN's cost per step, one replica vs two (benchmarks/bench_sync.py)"

if __name__ == "__main__":
    define_flags()
    cli.run_benchmark(TITLE, benchmark, report_wanted=lambda: not FLAGS.child)
