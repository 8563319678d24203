"""Runs experiments/train.py as N local workers of a MultiWorkerMirroredStrategy cluster.

Each worker is a process on 127.0.0.1 with its own TF_CONFIG; worker 0 is the
chief and alone writes to --workdir (the others write to private scratch space
inside it, removed when they end). If a worker dies, the others are stopped
and the launcher exits non-zero with one line; the same command then resumes
every worker from the chief's last completed epoch. Ctrl-C or SIGTERM to the
launcher reaches every worker; the launcher waits until all have saved and
exited, then says what is saved and exits 130 or 143.

    python experiments/launch_local_workers.py --num_workers=2 -- \\
        --model=lenet --bn=custom --dataset=synthetic --epochs=1 --workdir=runs/mw
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
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


@dataclasses.dataclass
class Outcome:
    """How the workers ended: their exit codes, and the signal (SIGINT, SIGTERM) the
    launcher received and forwarded, if any."""

    codes: list[int]
    signal: int | None = None


def launch(num_workers: int, train_args: list[str], timeout: float,
           env: dict[str, str] | None = None, watch=None) -> Outcome:
    """Starts the workers and waits until every one has exited; returns how they ended.

    If one fails or the time is up, the others are stopped (SIGINT, then SIGKILL after
    STOP_GRACE_SECONDS). Ctrl-C or SIGTERM to the launcher reaches every worker as SIGINT,
    on which it saves what it has and exits; the launcher never returns while a worker
    lives.
    `watch(procs)`, if given, is called while they run (tests use it to kill a worker).
    """
    ports = free_ports(num_workers)
    procs: list[subprocess.Popen] = []
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                # SIGINT for either: TensorFlow's multi-worker runtime takes SIGTERM over in
                # its workers (for its own preemption handling), so only SIGINT reaches
                # train.py's answer (save, say so, exit).
                p.send_signal(signal.SIGINT)

    previous = {s: signal.signal(s, forward) for s in cli.STOP_SIGNALS}
    try:
        for index in range(num_workers):
            worker_env = {**os.environ, **(env or {}), "TF_CONFIG": tf_config(ports, index),
                          cli.LAUNCHED_WORKER: "1"}  # the launcher's line speaks for all
            procs.append(subprocess.Popen(
                [sys.executable, TRAIN, "--strategy=multi_worker_mirrored", "--verbose=2",
                 *train_args], env=worker_env))
            logging.info("worker %d: pid %d, TF_CONFIG %s", index, procs[-1].pid,
                         worker_env["TF_CONFIG"])
            if received:  # a signal came while the workers were starting
                forward(received[-1], None)
        _wait(procs, time.monotonic() + timeout, watch)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop(procs)  # only still running if the launcher itself failed
    return Outcome([p.returncode for p in procs], received[0] if received else None)


STOP_GRACE_SECONDS = 60


def _wait(procs, deadline, watch) -> None:
    """Returns once every worker has exited; stops the others when one fails or at the
    deadline."""
    stopping_since = None
    while any([p.poll() is None for p in procs]):  # a list: every worker polled each time
        failed = any(p.returncode not in (None, 0) for p in procs)
        if stopping_since is None and (failed or time.monotonic() > deadline):
            stopping_since = time.monotonic()
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)  # see launch(): SIGTERM is TensorFlow's
        elif stopping_since is not None and time.monotonic() - stopping_since > STOP_GRACE_SECONDS:
            _stop(procs)
        if watch is not None:
            watch(procs)
        time.sleep(0.2)


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def workdir_of(train_args: list[str]) -> str | None:
    """The --workdir among train.py's flags (its default names the run by model and BN)."""
    values = {}
    for i, arg in enumerate(train_args):
        name, eq, value = arg.partition("=")
        if name in ("--workdir", "--model", "--bn"):
            values[name] = value if eq else (train_args[i + 1] if i + 1 < len(train_args) else "")
    return values.get("--workdir") or (
        f"runs/{values.get('--model', 'lenet')}_{values.get('--bn', 'custom')}")


def main(argv):
    outcome = launch(FLAGS.num_workers, argv[1:], FLAGS.timeout)
    if outcome.signal is not None:
        from bn_keras.train import workdir

        try:
            saved = workdir.describe(workdir_of(argv[1:]))
        except Exception:  # noqa: BLE001 - the exit must not depend on it
            saved = "completed work is saved"
        cli.print_interrupted(cli.resumable_line(f"all {FLAGS.num_workers} workers stopped; "
                                                 f"{saved}"))
        sys.exit(128 + outcome.signal)
    if any(outcome.codes):
        raise UserError(f"workers exited with codes {outcome.codes}; the run stopped. Run the "
                        "same command again to resume from the last completed epoch.")
    print(f"all {FLAGS.num_workers} workers finished")


if __name__ == "__main__":
    define_flags()
    cli.run(main, exit_on_signal=False, positional=True)
