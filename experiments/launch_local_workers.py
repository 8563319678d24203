"""Runs experiments/train.py as N local workers of a MultiWorkerMirroredStrategy cluster.

Each worker is a process on 127.0.0.1 with its own TF_CONFIG; worker 0 is the
chief and alone writes to --workdir. If a worker dies, the others are stopped
and the launcher exits non-zero with one line; the same command then resumes
every worker from the last completed epoch (BackupAndRestore).

    python experiments/launch_local_workers.py --num_workers=2 -- \\
        --model=lenet --bn=custom --dataset=synthetic --epochs=1 --workdir=runs/mw
"""

from __future__ import annotations

from bn_keras import cli

cli.quiet_tensorflow()

import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from absl import flags, logging  # noqa: E402

from bn_keras.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")


def define_flags() -> None:
    flags.DEFINE_integer("num_workers", 2, "Worker processes to start.", lower_bound=1)
    flags.DEFINE_integer("timeout", 3600, "Seconds before the whole run is stopped.",
                         lower_bound=1)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def launch(num_workers: int, train_args: list[str], timeout: float,
           env: dict[str, str] | None = None, watch=None) -> list[int]:
    """Starts the workers, waits, and returns their exit codes; stops all if one fails.

    `watch(procs)`, if given, is called twice a second while they run (tests use it
    to kill a worker mid-run).
    """
    ports = free_ports(num_workers)
    procs = []
    for index in range(num_workers):
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": tf_config(ports, index)}
        procs.append(subprocess.Popen(
            [sys.executable, TRAIN, "--strategy=multi_worker_mirrored", "--verbose=2",
             *train_args], env=worker_env))
        logging.info("worker %d: pid %d, TF_CONFIG %s", index, procs[-1].pid,
                     worker_env["TF_CONFIG"])
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs):
        failed = [i for i, p in enumerate(procs) if p.returncode not in (None, 0)]
        if failed or time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                p.wait()
            break
        if watch is not None:
            watch(procs)
        time.sleep(0.5)
    return [p.returncode for p in procs]


def main(argv):
    codes = launch(FLAGS.num_workers, argv[1:], FLAGS.timeout)
    if any(codes):
        raise UserError(f"workers exited with codes {codes}; the run stopped. Run the same "
                         "command again to resume from the last completed epoch.")
    print(f"all {FLAGS.num_workers} workers finished")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
