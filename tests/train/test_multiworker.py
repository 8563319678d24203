"""Two local MultiWorkerMirroredStrategy workers: identical training, chief-only writes, resume."""

import csv
import glob
import json
import os

import keras
import pytest

from bn_keras.layers import BatchNormalization

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


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
        [".lock", "backup", "checkpoints", "config.json", "final.keras",
         "final_metrics.json", "metrics.csv", "tensorboard"])
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
