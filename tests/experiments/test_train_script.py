"""experiments/train.py as a user meets it: its output, Ctrl-C, kills at any moment, TensorBoard.

Every test here starts fresh Python processes (TensorFlow's start-up is several
seconds each), hence the `slow` marker.
"""

import csv
import json
import os
import signal
import time
import urllib.parse

import numpy as np
import pytest

from bn_keras.testing.tensorboard_server import get_json, wait_for_runs
from bn_keras.train import training
from bn_keras.train.config import TrainConfig

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

# 96 steps per epoch of a few seconds: long enough to be stopped in the middle.
ARGS = ["--dataset=synthetic", "--synthetic_examples=3072", "--batch_size=32", "--epochs=3",
        "--log_every_n_steps=8"]
RESULT_COLUMNS = ("epoch", "step", "loss", "accuracy", "val_loss", "val_accuracy",
                  "learning_rate")
# Kills the process (SIGKILL, no clean-up) while it writes the state of epoch 2, after
# the weights and before the state file: in the middle of a checkpoint write.
KILL_IN_COMMIT = """
import os, signal
from bn_keras import atomic
write_text = atomic.write_text
def dying(path, text):
    if path.endswith("state.json") and '"epoch": 2,' in text:
        os.kill(os.getpid(), signal.SIGKILL)
    return write_text(path, text)
atomic.write_text = dying
"""
# Kills the process after the final model is saved, before final_metrics.json.
KILL_IN_FINISH = KILL_IN_COMMIT.replace('path.endswith("state.json") and \'"epoch": 2,\' in text',
                                        'path.endswith("final_metrics.json")')
# Holds the run in the middle of epoch 2, trained but not committed, and says so by
# writing the file $HELD: a stop there finds epoch 2 unfinished on any machine.
HOLD_BEFORE_COMMIT_2 = """
import os, time
from bn_keras import cli
cli.quiet_tensorflow()  # as train.py does first: no TensorFlow lines on stderr
from bn_keras.train import workdir
commit = workdir.Workdir.commit
def held(self, model, state):
    if state["epoch"] == 2:
        open(os.environ["HELD"], "w").close()
        time.sleep(3600)
    return commit(self, model, state)
workdir.Workdir.commit = held
"""


@pytest.fixture(scope="module")
def start(scripts):
    """Starts train.py on a workdir: start(workdir, *flags, prelude=None) -> Popen."""
    def start_training(workdir, *extra, prelude=None, env=None):
        return scripts.start("experiments/train", *ARGS, f"--workdir={workdir}", *extra,
                             prelude=prelude, env=env)

    return start_training


def _rows(workdir):
    path = os.path.join(workdir, "metrics.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def _results(workdir):
    rows = [{k: r[k] for k in RESULT_COLUMNS} for r in _rows(workdir)]
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        final = json.load(f)
    return rows, final["test_loss"], final["test_accuracy"], final["loss_curve"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, start):
    """The uninterrupted run every interrupted one must reproduce."""
    workdir = tmp_path_factory.mktemp("reference")
    proc = start(workdir)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return _results(workdir), out, err


def test_output_is_one_line_per_epoch_and_no_tensorflow_chatter(reference):
    _, out, err = reference
    lines = out.splitlines()
    assert lines[0].startswith("starting: model=lenet bn=custom")
    assert [line.split(":")[0] for line in lines[1:4]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert lines[4].startswith("test accuracy ") and lines[5].startswith("BN doctor (")
    assert len(lines) == 6
    assert "\x1b" not in out and "\r" not in out  # no progress bar in a log file
    for noise in ("I0000", "W0000", "E0000", "oneDNN", "cuInit", "absl::InitializeLog"):
        assert noise not in err, (noise, err)


def test_verbosity_brings_tensorflow_logs_back(tmp_path, scripts):
    proc = scripts.run("experiments/train", "--dataset=synthetic", "--epochs=1",
                       "--synthetic_examples=256", f"--workdir={tmp_path}", "--verbosity=0")
    assert proc.returncode == 0, proc.stderr
    assert "I0000" in proc.stderr


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_a_stop_answers_within_two_seconds_and_the_rerun_is_exact(tmp_path, reference, start,
                                                                  signum, code, wait_for):
    """Ctrl-C, or SIGTERM (Kubernetes, Slurm preemption, `docker stop`, systemd), while
    epoch 2 is trained and not yet committed."""
    held = tmp_path.parent / f"{tmp_path.name}.held"
    proc = start(tmp_path, prelude=HOLD_BEFORE_COMMIT_2, env={"HELD": str(held)})
    wait_for(held.exists, "epoch 2 trained")
    sent = time.time()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    latency = time.time() - sent
    assert proc.returncode == code, err
    assert latency < 2.0, latency
    assert err.startswith("interrupted: 1 of 3 epochs saved in")  # no blank line first
    assert "run the same command again to resume" in err and "Traceback" not in err
    rerun = start(tmp_path)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert "resuming after epoch 1" in out
    assert _results(tmp_path) == reference[0]


def test_killed_at_any_moment_the_rerun_is_exact(tmp_path, reference, start, wait_for):
    # 1. SIGKILL in epoch 2, trained and not committed.
    held = tmp_path.parent / f"{tmp_path.name}.held"
    proc = start(tmp_path, prelude=HOLD_BEFORE_COMMIT_2, env={"HELD": str(held)})
    wait_for(held.exists, "epoch 2 trained")
    proc.kill()
    proc.communicate()
    assert len(_rows(tmp_path)) == 1
    # 2. SIGKILL in the middle of writing epoch 2's checkpoint.
    proc = start(tmp_path, prelude=KILL_IN_COMMIT)
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert len(_rows(tmp_path)) == 1  # epoch 2 never committed
    assert any(n.startswith(".tmp-0002") for n in os.listdir(tmp_path / "backup"))
    # 3. SIGKILL after training, before the run is marked finished.
    proc = start(tmp_path, prelude=KILL_IN_FINISH)
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert len(_rows(tmp_path)) == 3 and not os.path.exists(tmp_path / "final_metrics.json")
    # 4. The same command once more: it finishes, with the uninterrupted run's numbers.
    proc = start(tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert _results(tmp_path) == reference[0]
    assert not any(n.startswith(".tmp") for n in os.listdir(tmp_path / "backup"))


def test_user_errors_are_one_line(tmp_path, scripts):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    is_a_file = ("experiments/train", "--dataset=synthetic", f"--workdir={a_file}")
    ghost = ("experiments/train", "--dataset=synthetic", "--virtual_batch_size=7",
             f"--workdir={tmp_path / 'ghost'}")
    nan = ("experiments/train", "--dataset=synthetic", "--weight_decay=nan",
           f"--workdir={tmp_path / 'nan'}")
    runs = scripts.run_all([is_a_file, ghost, nan])  # at once: mostly TensorFlow's start-up
    proc = runs[is_a_file]
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: --workdir='{a_file}' is a file, not a directory; "
                                   "choose a directory path.")
    proc = runs[ghost]
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "virtual_batch_size=7 does not divide the batch size per replica 128" in proc.stderr
    assert not os.path.exists(tmp_path / "ghost")
    proc = runs[nan]
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: weight_decay must be a number in [0, 1], got nan."
    assert not os.path.exists(tmp_path / "nan")


def test_tensorboard_server_shows_one_point_per_epoch_equal_to_metrics_csv(
        tmp_path, tensorboard_server):
    # 10 steps per epoch, chunks of 3 steps, a loss window of 7: nothing divides anything.
    training.run(TrainConfig(dataset="synthetic", synthetic_examples=300, batch_size=32,
                             epochs=3, steps_per_execution=3, log_every_n_steps=7,
                             workdir=str(tmp_path), verbose=0, probe_size=64))
    url = tensorboard_server(tmp_path / "tensorboard")
    tags = wait_for_runs(url, {"train", "validation", "bn_diagnostics"})
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_images_per_second",
            "batch_loss"} <= set(tags["train"])
    assert {"epoch_loss", "epoch_accuracy"} <= set(tags["validation"])
    assert any(t.startswith("grad_norm/") for t in tags["bn_diagnostics"])
    rows = _rows(tmp_path)
    steps = [int(r["step"]) for r in rows]
    assert steps == [10, 20, 30]
    for run, prefix, tag in (("train", "", "loss"), ("train", "", "accuracy"),
                             ("train", "", "learning_rate"), ("train", "", "images_per_second"),
                             ("validation", "val_", "loss"), ("validation", "val_", "accuracy")):
        query = urllib.parse.urlencode({"run": run, "tag": f"epoch_{tag}"})
        points = get_json(f"{url}/data/plugin/scalars/scalars?{query}")  # [wall, step, value]
        assert [p[1] for p in points] == steps, (run, tag)
        np.testing.assert_array_equal(np.float32([p[2] for p in points]),
                                      np.float32([float(r[prefix + tag]) for r in rows]))
    query = urllib.parse.urlencode({"run": "bn_diagnostics", "tag": "grad_norm/conv1"})
    assert [p[1] for p in get_json(f"{url}/data/plugin/scalars/scalars?{query}")] == [0, *steps]
