"""Training images/s of LeNet with our synchronized BN: 1 replica, 2 replicas, 2 local workers.

2 replicas are MirroredStrategy over two logical CPU devices of this machine; 2 workers
are two processes under MultiWorkerMirroredStrategy (experiments/launch_local_workers.py).
All share the same CPU cores, so no speed-up is expected: this measures the cost of
synchronization, not scaling. Synthetic CIFAR-shaped data, per-replica batch 64.
Each figure is training.run's median epoch.

    python benchmarks/bench_scaling.py [--epochs=3] [--examples=8192]
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_flags() -> None:
    cli.define_report_flag("bench_scaling")
    flags.DEFINE_integer("epochs", 3, "Training epochs per setup.", lower_bound=1)
    flags.DEFINE_integer("examples", 8192, "Synthetic training examples.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 64, "Batch size per replica.", lower_bound=1)


def local_workers_metrics(workdir: str):
    """The RunResult of a 2-worker run of experiments/train.py on this machine."""
    from bn_keras.train.results import RunResult

    command = [sys.executable, os.path.join(ROOT, "experiments", "launch_local_workers.py"),
               "--num_workers=2", "--", "--dataset=synthetic",
               f"--synthetic_examples={FLAGS.examples}", f"--epochs={FLAGS.epochs}",
               f"--batch_size={FLAGS.batch_size}", f"--workdir={workdir}"]
    proc = subprocess.run(command, capture_output=True, text=True)
    path = os.path.join(workdir, "final_metrics.json")
    if proc.returncode != 0 or not os.path.exists(path):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the 2-worker run failed (exit {proc.returncode}): {last}")
    with open(path) as f:
        return RunResult.from_json(json.load(f))


def benchmark() -> None:
    import tensorflow as tf

    # Before TensorFlow's runtime starts: two logical devices for MirroredStrategy.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from bn_keras.train import TrainConfig, training

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        for label, strategy in (
                ("1 replica (one device)", tf.distribute.OneDeviceStrategy(devices[0])),
                ("2 replicas (MirroredStrategy, 2 logical CPUs)",
                 tf.distribute.MirroredStrategy(devices[:2]))):
            config = TrainConfig(
                dataset="synthetic", synthetic_examples=FLAGS.examples, epochs=FLAGS.epochs,
                batch_size=FLAGS.batch_size, verbose=0, workdir=os.path.join(tmp, label[:1]))
            metrics = training.run(config, strategy_override=strategy)
            rows.append((label, metrics.global_batch_size, metrics.train_images_per_second))
        metrics = local_workers_metrics(os.path.join(tmp, "workers"))
        rows.append(("2 local workers (MultiWorkerMirroredStrategy)", metrics.global_batch_size,
                     metrics.train_images_per_second))
    print(f"LeNet, our BN (synchronized with >1 replica), {os.cpu_count()} CPU cores, "
          f"median epoch of {FLAGS.epochs}\n")
    print("| setup | global batch | training images/s | vs 1 replica |")
    print("|---|---|---|---|")
    for label, batch, ips in rows:
        print(f"| {label} | {batch} | {ips:.0f} | {ips / rows[0][2]:.2f}x |")


TITLE = 'One replica vs two (benchmarks/bench_scaling.py)'

if __name__ == "__main__":
    define_flags()
    cli.run_benchmark(TITLE, benchmark)
