"""Training images/s of LeNet with our synchronized BN: 1 replica, 2 replicas, 2 local workers.

2 replicas are MirroredStrategy over two logical CPU devices of this machine; 2 workers
are two processes under MultiWorkerMirroredStrategy (experiments/launch_local_workers.py).
All share the same CPU cores, so no speed-up is expected: this measures the cost of
synchronization, not scaling. Synthetic CIFAR-shaped data, per-replica batch 64.

    python benchmarks/bench_scaling.py [--epochs 3] [--examples 8192]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=8192)
    parser.add_argument("--batch_size", type=int, default=64, help="per replica")
    args = parser.parse_args()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from bn_keras import training

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        for label, strategy in (("1 replica (one device)", tf.distribute.OneDeviceStrategy(devices[0])),
                                ("2 replicas (MirroredStrategy, 2 logical CPUs)",
                                 tf.distribute.MirroredStrategy(devices[:2]))):
            config = training.TrainConfig(
                dataset="synthetic", synthetic_examples=args.examples, epochs=args.epochs,
                batch_size=args.batch_size, verbose=0, workdir=os.path.join(tmp, label[:1]))
            metrics = training.run(config, strategy_override=strategy)
            rows.append((label, metrics["global_batch_size"], metrics["train_images_per_second"]))
        workdir = os.path.join(tmp, "workers")
        subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "launch_local_workers.py"),
                        "--num_workers=2", "--", "--dataset=synthetic",
                        f"--synthetic_examples={args.examples}", f"--epochs={args.epochs}",
                        f"--batch_size={args.batch_size}", f"--workdir={workdir}"],
                       check=True, capture_output=True)
        with open(glob.glob(os.path.join(workdir, "final_metrics.json"))[0]) as f:
            metrics = json.load(f)
        rows.append(("2 local workers (MultiWorkerMirroredStrategy)", metrics["global_batch_size"],
                     metrics["train_images_per_second"]))
    print(f"LeNet, our BN (synchronized with >1 replica), {os.cpu_count()} CPU cores, "
          f"median epoch of {args.epochs}\n")
    print("| setup | global batch | training images/s | vs 1 replica |")
    print("|---|---|---|---|")
    for label, batch, ips in rows:
        print(f"| {label} | {batch} | {ips:.0f} | {ips / rows[0][2]:.2f}x |")


if __name__ == "__main__":
    main()
