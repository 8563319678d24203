"""Two local MultiWorkerMirroredStrategy workers: identical training, chief-only writes, resume."""

import csv
import glob
import json
import os

import keras
import pytest

from bn_keras.layers import BatchNormalization

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.proof]


def _train_args(workdir, epochs):
    return ["--model=lenet", "--bn=custom", "--dataset=synthetic", "--synthetic_examples=256",
            "--batch_size=16", f"--epochs={epochs}", f"--workdir={workdir}", "--bn_momentum=0.9"]


def _epochs(path):
    with open(path) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_two_workers_train_identical_weights_and_only_the_chief_writes(tmp_path, load_script):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    workdir = tmp_path / "run"
    launcher = load_script("experiments/launch_local_workers")
    codes = launcher.launch(2, _train_args(workdir, 1), timeout=600,
                            env={"TMPDIR": str(scratch)}).codes
    assert codes == [0, 0]
    for name in ("final.keras", "final_metrics.json", "checkpoints/best.keras", "metrics.csv"):
        assert os.path.exists(workdir / name), name
    assert glob.glob(str(workdir / "tensorboard" / "train" / "events.*"))
    # Worker 1 wrote to private scratch space inside the workdir, removed at the end;
    # nothing went to the system's temporary directory.
    assert sorted(os.listdir(workdir)) == sorted(
        [".lock", "backup", "bn_doctor.json", "checkpoints", "config.json", "final.keras",
         "final_metrics.json", "metrics.csv", "tensorboard"])  # the chief's BN checkup
    assert os.listdir(scratch) == []
    with open(workdir / "final_metrics.json") as f:
        assert json.load(f)["workers_agree"] is True  # identical weights, compared at the end
    chief = keras.models.load_model(workdir / "final.keras")
    assert all(layer.synchronized for layer in chief.layers
               if isinstance(layer, BatchNormalization))


def test_killed_worker_stops_the_run_and_a_restart_resumes(tmp_path, load_script):
    launcher = load_script("experiments/launch_local_workers")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    workdir = tmp_path / "run"
    csv_path = workdir / "metrics.csv"

    def kill_worker_after_first_epoch(procs):
        if os.path.exists(csv_path) and _epochs(csv_path) and procs[1].poll() is None:
            procs[1].kill()

    args = _train_args(workdir, 3) + ["--synthetic_examples=1024"]
    codes = launcher.launch(2, args, timeout=600, env={"TMPDIR": str(scratch)},
                            watch=kill_worker_after_first_epoch).codes
    assert codes[1] == -9 and codes[0] != 0  # the chief was stopped, not left hanging
    done = _epochs(csv_path)
    assert done and done == list(range(1, len(done) + 1)) and len(done) < 3
    codes = launcher.launch(2, args, timeout=600, env={"TMPDIR": str(scratch)}).codes
    assert codes == [0, 0]
    assert _epochs(csv_path) == [1, 2, 3]


def test_a_worker_dying_at_start_up_stops_the_launch_at_once(tmp_path, load_script):
    """The launcher polled worker 0 only: worker 1 killed at start-up left it waiting out
    its whole timeout (359 s with --timeout=300). Every worker is polled now."""
    import time

    launcher = load_script("experiments/launch_local_workers")

    def kill_worker_1(procs):
        if len(procs) == 2 and procs[1].poll() is None:
            procs[1].kill()

    start = time.monotonic()
    outcome = launcher.launch(2, _train_args(tmp_path / "run", 1), timeout=3600,
                              watch=kill_worker_1)
    assert outcome.codes[1] == -9 and outcome.codes[0] != 0
    assert time.monotonic() - start < 600  # noticed, not waited out


def test_the_launcher_stops_the_rest_when_a_worker_dies_mid_training(tmp_path, load_script,
                                                                    capfd):
    """Worker 1 killed in the middle of training: the launcher notices it and stops the
    chief (Ctrl-C: it saves what it has), without a traceback anywhere."""
    launcher = load_script("experiments/launch_local_workers")
    csv_path = tmp_path / "run" / "metrics.csv"

    def kill_worker_1_after_an_epoch(procs):
        if os.path.exists(csv_path) and _epochs(csv_path) and procs[1].poll() is None:
            procs[1].kill()

    args = _train_args(tmp_path / "run", 3) + ["--synthetic_examples=1024"]
    outcome = launcher.launch(2, args, timeout=600, watch=kill_worker_1_after_an_epoch)
    assert outcome.codes[1] == -9 and outcome.codes[0] in (1, 130)
    assert "Traceback" not in capfd.readouterr().err


def _hand_started(scripts, tmp_path, epochs, extra=()):
    """Two workers started by hand, as docs/distributed.md's TF_CONFIG setup (one pod
    each): their processes."""
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [scripts.start("experiments/train", "--strategy=multi_worker_mirrored",
                          *_train_args(tmp_path / "run", epochs), *extra,
                          env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {
                              "type": "worker", "index": index}})})
            for index in range(2)]


def test_a_lost_peer_is_one_line_and_sigterm_is_answered_mid_training(tmp_path, scripts,
                                                                        wait_for):
    """Hand-started workers: SIGTERM to worker 1 mid-training is answered (TensorFlow's own
    SIGTERM handler no longer replaces ours once the cluster is up), and the chief, whose
    peer is gone, says so in one line (it ended in a 50-line UnavailableError traceback)."""
    import signal

    workers = _hand_started(scripts, tmp_path, 3, ["--synthetic_examples=2048"])
    try:
        wait_for(lambda: os.path.exists(tmp_path / "run" / "metrics.csv")
                 and _epochs(tmp_path / "run" / "metrics.csv"), "an epoch committed")
        workers[1].send_signal(signal.SIGTERM)
        assert workers[1].wait(timeout=60) == 143
        _, err = workers[0].communicate(timeout=300)
        assert workers[0].returncode == 1, err[-2000:]
        assert err.strip().splitlines()[-1].startswith(
            "error: another worker of the run stopped (")
        assert "Traceback" not in err
    finally:
        for worker in workers:
            worker.kill()
            worker.communicate()


def test_a_hand_started_worker_waiting_for_a_missing_peer_stops_on_ctrl_c(tmp_path, scripts,
                                                                          wait_for):
    """docs/distributed.md's TF_CONFIG setup with the second worker never started: the
    first waits in C++ for its peer, holding Python's lock, and ignored every signal. Ctrl-C
    and SIGHUP stop it now (their default action: no line can be printed then)."""
    import signal
    import socket

    from bn_keras.train import distribute

    port = _free_port()
    tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}",
                                                   f"127.0.0.1:{_free_port()}"]},
                            "task": {"type": "worker", "index": 0}})
    proc = scripts.start("experiments/train", "--strategy=multi_worker_mirrored",
                         *_train_args(tmp_path / "run", 1), env={"TF_CONFIG": tf_config})

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, "the worker's server is up, waiting for its peer")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == -signal.SIGINT
    finally:
        proc.kill()
        proc.communicate()
    assert distribute.PEER_FAILURES  # what a survivor turns into one line (test above)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
