"""Fault injection: a run meets what users meet, and nothing committed is lost.

Two writers on one workdir, signals to the multi-worker launcher, every
file a resume reads damaged in turn, a full filesystem and a read-only one. Each
ends in one clear line or a correct run, and a run resumed afterwards ends with
the numbers of a run that never stopped. (SIGTERM to train.py: test_train_script.py,
beside Ctrl-C.)

A full or read-only filesystem is a tmpfs or a read-only bind mount made by the
test (root on Linux); where mounting is not allowed the test is skipped, saying so.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess

import keras
import pytest

from bn_keras import atomic
from bn_keras.errors import AlreadyExists, DamagedFile, InUse, Unusable
from bn_keras.locking import DirectoryLock
from bn_keras.train import training
from bn_keras.train.config import TrainConfig

pytestmark = pytest.mark.slow  # every test here trains or starts processes


def _config(workdir, **overrides):
    values = dict(dataset="synthetic", synthetic_examples=256, batch_size=32, epochs=3,
                  bn_momentum=0.9, workdir=str(workdir), verbose=0, probe_size=32,
                  log_every_n_steps=4)
    return TrainConfig(**{**values, **overrides})


def _results(workdir):
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        final = json.load(f)
    rows = [{k: row[k] for k in ("epoch", "loss", "accuracy", "val_accuracy")}
            for row in final["history"]]
    return rows, final["test_loss"], final["test_accuracy"], final["loss_curve"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run, and a run stopped after 2 of its 3 epochs (3 commits
    would keep epochs 2 and 3; 2 keep 1 and 2), to damage and resume."""
    root = tmp_path_factory.mktemp("reference")
    training.run(_config(root / "whole"))

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.run(_config(root / "two"), extra_callbacks=[StopAfterTwo()])
    return _results(root / "whole"), root / "two"


@pytest.fixture
def stopped(reference, tmp_path):
    """A fresh copy of the run stopped after 2 of 3 epochs."""
    path = tmp_path / "run"
    shutil.copytree(reference[1], path)
    return path


def _newest(workdir):
    return workdir / "backup" / "epoch-0002"


def _snapshot(path):
    """Every file under `path` with its bytes, but the lock (which says who holds it): to
    show a refused run touched nothing."""
    return {os.path.relpath(os.path.join(d, f), path): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(path) for f in files if f != ".lock"}


# --------------------------------------------------------------- damaged files
@pytest.mark.parametrize("content", ["", '{"model": "lenet", "bn"', "[]"])
def test_a_damaged_config_is_named_with_what_to_do(stopped, content):
    (stopped / "config.json").write_text(content)
    before = (stopped / "metrics.csv").read_text()
    with pytest.raises(DamagedFile) as error:
        training.run(_config(stopped))
    message = str(error.value)
    assert message.startswith(f"{stopped / 'config.json'} is damaged (")
    assert message.endswith("the run's settings are unknown: put the file back, or choose "
                            "another `workdir`.")
    assert (stopped / "metrics.csv").read_text() == before  # nothing changed


@pytest.mark.parametrize("damage", ["empty state", "state without epoch", "cut weights",
                                    "altered weights"])
def test_a_damaged_newest_commit_falls_back_to_the_one_before(stopped, reference, damage,
                                                              caplog):
    newest = _newest(stopped)
    if damage == "empty state":
        (newest / "state.json").write_text("")
    elif damage == "state without epoch":
        (newest / "state.json").write_text("{}")
    else:
        weights = newest / "model.weights.h5"
        data = bytearray(weights.read_bytes())
        if damage == "cut weights":
            data = data[: len(data) // 2]
        else:
            data[len(data) // 2] ^= 0xFF  # one bit pattern changed: still a valid HDF5 file
        weights.write_bytes(bytes(data))
    metrics = training.run(_config(stopped))
    assert metrics.epochs_run_this_session == 2  # epochs 2 and 3, from epoch 1's commit
    assert "resuming from the epoch committed before it" in caplog.text
    assert _results(stopped) == reference[0]


def test_no_whole_commit_left_is_one_line_with_what_to_do(stopped):
    for commit in ("epoch-0001", "epoch-0002"):
        (stopped / "backup" / commit / "state.json").write_text("{")
    with pytest.raises(DamagedFile, match=r"no committed epoch of .* is whole: move .*backup "
                                          r"aside to start again from epoch 0"):
        training.run(_config(stopped))


def test_backup_replaced_by_a_file_is_refused_and_loses_nothing(stopped):
    shutil.rmtree(stopped / "backup")
    (stopped / "backup").write_text("x")
    before = (stopped / "metrics.csv").read_text()
    with pytest.raises(Unusable, match=r"backup is not a directory, so the run's committed "
                                       r"epochs cannot be read; move it aside"):
        training.run(_config(stopped))
    assert (stopped / "metrics.csv").read_text() == before


def test_an_event_file_damaged_in_the_middle_is_kept_as_it_is(stopped, caplog):
    events = stopped / "tensorboard" / "bn_diagnostics"
    path = next(events.iterdir())
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = b"\x00" * 16
    path.write_bytes(bytes(data))
    training.run(_config(stopped))
    assert path.read_bytes() == bytes(data)  # never rewritten
    assert f"{path} is damaged after its first" in caplog.text
    assert "it is kept as it is" in caplog.text


def test_a_damaged_final_metrics_finishes_the_run_again(reference, tmp_path, caplog):
    finished = tmp_path / "finished"
    training.run(_config(finished, epochs=1))
    (finished / "final_metrics.json").write_text('{"test_acc')
    metrics = training.run(_config(finished, epochs=1))
    assert metrics.epochs_run_this_session == 0  # nothing trained again
    assert "final_metrics.json is damaged" in caplog.text
    assert atomic.read_json(str(finished / "final_metrics.json"))["epochs"] == 1


def test_temporary_files_of_a_killed_run_are_removed_on_the_next_start(stopped, reference):
    leftovers = [stopped / ".metrics.999999.tmp.csv", stopped / ".final.999999.tmp.keras",
                 stopped / ".final_metrics.999999.tmp.json",
                 stopped / "checkpoints" / ".best.999999.tmp.keras",
                 stopped / "tensorboard" / "train" / ".pruning.999999.tmp",
                 # as bn_keras 0.1.0 named them
                 stopped / ".metrics.csv.999999.tmp", stopped / ".tmp-999999-final.keras"]
    for path in leftovers:
        path.write_text("half")
    (stopped / "backup" / ".tmp-0003-999999").mkdir()
    training.run(_config(stopped))
    assert not [p for p in leftovers if p.exists()]
    assert sorted(os.listdir(stopped / "backup")) == ["epoch-0002", "epoch-0003"]
    assert _results(stopped) == reference[0]


def test_a_damaged_model_file_is_one_line(tmp_path, scripts):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    proc = scripts.run("experiments/export", f"--model_path={bad}", f"--base_dir={tmp_path}",
                       "--dataset=synthetic", timeout=300)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {bad} is damaged (Keras cannot load it")


# --------------------------------------------------------------- full and read-only places
@contextlib.contextmanager
def _mounted(path, *options, source="tmpfs", kind=("-t", "tmpfs")):
    """`mount` at `path`, unmounted afterwards; skips the test where mounting is not allowed."""
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", *kind, "-o", ",".join(options), source, str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or 'not allowed'}); the "
                    "full-disk and read-only tests need root on Linux")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def test_a_full_disk_is_one_line_and_loses_nothing(reference, tmp_path):
    # 2.5 MB: two epochs' commits and the first best checkpoint fit; a new best in epoch 3
    # (written beside the old one before the rename) does not.
    with _mounted(tmp_path / "small", "size=2560k") as small:
        config = _config(small / "run")
        with pytest.raises(Unusable) as error:
            training.run(config)
        message = str(error.value)
        assert "No space left on device; free some space on that disk." in message
        assert "Nothing committed is lost: 2 epoch(s) saved" in message
        left = [name for _, _, files in os.walk(small / "run") for name in files
                if atomic.is_temporary(name)]
        assert not left  # the failed write's temporary file went with it
        shutil.copytree(small / "run", tmp_path / "moved")
    # The same run, moved to a disk with room, resumes to the uninterrupted result.
    training.run(_config(tmp_path / "moved"))
    assert _results(tmp_path / "moved") == reference[0]


def test_a_read_only_workdir_and_export_dir_are_one_line(tmp_path):
    (tmp_path / "source").mkdir()
    with _mounted(tmp_path / "readonly", "bind", source=str(tmp_path / "source"),
                  kind=("--bind",)):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(tmp_path / "readonly")],
                       check=True)
        with pytest.raises(Unusable, match=r"cannot write .*readonly/run: Read-only file system;"
                                           r" it is on a read-only filesystem"):
            training.run(_config(tmp_path / "readonly" / "run"))
        from bn_keras import models
        from bn_keras.serve import export

        with pytest.raises(Unusable, match="Read-only file system"):
            export.export_saved_model(models.lenet_cifar("custom"),
                                      str(tmp_path / "readonly"), "lenet")


# --------------------------------------------------------------- two writers, signals
def test_one_writer_per_directory(tmp_path):
    with DirectoryLock(str(tmp_path / "w")):
        with pytest.raises(InUse, match=rf"workdir '{tmp_path / 'w'}' is in use by process "
                                        rf"{os.getpid()} \(.*\), started "):
            DirectoryLock(str(tmp_path / "w")).__enter__()
    with DirectoryLock(str(tmp_path / "w")):  # released with its holder
        pass
    with DirectoryLock(str(tmp_path / "new")):
        pass
    assert not (tmp_path / "new").exists()  # created for nothing: removed again
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(AlreadyExists, match="is a file, not a directory"):
        training.run(_config(tmp_path / "a_file"))


def _epochs_done(workdir):
    path = os.path.join(workdir, "metrics.csv")
    return max(0, len(open(path).read().splitlines()) - 1) if os.path.exists(path) else 0


LONG = ["--dataset=synthetic", "--synthetic_examples=8192", "--batch_size=32", "--epochs=3"]


def test_a_second_run_on_a_workdir_in_use_is_refused_and_the_first_is_untouched(
        tmp_path, scripts, wait_for):
    workdir = tmp_path / "run"
    first = scripts.start("experiments/train", *LONG, f"--workdir={workdir}")
    wait_for(lambda: (workdir / "config.json").exists(), "config.json written")
    second = scripts.run("experiments/train", *LONG, f"--workdir={workdir}", timeout=300)
    assert second.returncode == 1 and len(second.stderr.strip().splitlines()) == 1, (
        second.stderr)
    assert f"workdir '{workdir}' is in use by process {first.pid} (" in second.stderr
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert _epochs_done(workdir) == 3 and (workdir / "final_metrics.json").exists()


def _alive_with(text):
    """Processes whose command line holds `text` (the run's unique workdir)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
    return found


@pytest.mark.multiprocess
@pytest.mark.proof  # three launches of two workers
def test_the_launcher_forwards_signals_waits_for_its_workers_and_resumes(tmp_path, scripts,
                                                                         wait_for):
    workdir = tmp_path / "mw"
    args = ["experiments/launch_local_workers", "--num_workers=2", "--",
            "--dataset=synthetic", "--synthetic_examples=2048", "--batch_size=16",
            "--epochs=3", "--bn_momentum=0.9", f"--workdir={workdir}"]
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        done_before = _epochs_done(workdir)
        launcher = scripts.start(*args)
        wait_for(lambda d=done_before: _epochs_done(workdir) > d, "an epoch committed")
        launcher.send_signal(signum)
        out, err = launcher.communicate(timeout=300)
        assert launcher.returncode == code, err
        assert err.strip().splitlines()[-1].startswith(
            "interrupted: all 2 workers stopped; ") and "epochs saved in" in err
        assert err.count("interrupted") == 1  # the workers stay quiet: one line for all
        assert _alive_with(str(workdir)) == []  # no worker outlives the launcher
    finished = scripts.run(*args, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert _epochs_done(workdir) == 3 and not (workdir / ".workers").exists()
    # A deleted workdir starts afresh (no worker holds state of its own elsewhere).
    shutil.rmtree(workdir)
    again = scripts.run(*args[:-2], "--epochs=1", f"--workdir={workdir}", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]


# --------------------------------------------------------- what a workdir holds
def test_a_lost_config_json_with_commits_is_a_damaged_run_never_emptied(stopped):
    """The run's config.json deleted, then a run of other settings on the same workdir:
    refused, naming the file, and every file kept as it was (it once truncated the event
    files and deleted metrics.csv)."""
    (stopped / "config.json").unlink()
    before = _snapshot(stopped)
    with pytest.raises(DamagedFile) as error:
        training.run(_config(stopped, seed=1))
    assert str(error.value).startswith(f"{stopped / 'config.json'} is damaged (missing, while "
                                       "the workdir holds a run (2 committed epoch(s)")
    assert "nothing of it is pruned or overwritten" in str(error.value)
    assert _snapshot(stopped) == before


def test_a_folder_of_someone_elses_files_is_refused_never_pruned(tmp_path):
    folder = tmp_path / "notes"
    (folder / "tensorboard" / "train").mkdir(parents=True)
    (folder / "metrics.csv").write_text("a,b\n1,2\n")
    (folder / "tensorboard" / "train" / "events.out.tfevents.1.host").write_bytes(b"x" * 100)
    before = _snapshot(folder)
    with pytest.raises(AlreadyExists, match=r"holds files no run of bn_keras wrote there "
                                            r"\(metrics.csv, tensorboard\)"):
        training.run(_config(folder, epochs=1))
    assert _snapshot(folder) == before


def test_an_empty_folder_or_one_with_a_lock_and_leftovers_is_a_new_workdir(tmp_path):
    folder = tmp_path / "fresh"
    folder.mkdir()
    (folder / ".lock").write_text("")
    (folder / ".config.999999.tmp.json").write_text("{")
    training.run(_config(folder, epochs=1))
    assert (folder / "final_metrics.json").exists()
    assert not (folder / ".config.999999.tmp.json").exists()


@pytest.mark.parametrize("change", ["one digit", "one key", "one digit, no checksum"])
def test_a_changed_committed_state_is_noticed_not_resumed_from(stopped, reference, change,
                                                                caplog):
    """"epoch": 2 -> 3 resumed "after epoch 3" and skipped an epoch; "epocx" trained a whole
    epoch and then raised KeyError. Both are damage now: the commit before is used."""
    path = _newest(stopped) / "state.json"
    state = json.loads(path.read_text())
    if change == "one key":
        state["epocx"] = state.pop("epoch")
    else:
        state["epoch"] = 3
        if change.endswith("no checksum"):  # as a commit of an earlier version
            del state["checksum"]
    path.write_text(json.dumps(state))
    metrics = training.run(_config(stopped))
    assert metrics.epochs_run_this_session == 2
    assert f"{path} is damaged" in caplog.text
    assert _results(stopped) == reference[0]


def test_a_config_from_a_newer_version_is_refused_not_rewritten(stopped):
    config = json.loads((stopped / "config.json").read_text())
    config["sharpness_aware"] = True
    (stopped / "config.json").write_text(json.dumps(config))
    before = _snapshot(stopped)
    with pytest.raises(ValueError, match=r"settings this version of bn_keras does not know "
                                         r"\(sharpness_aware\)"):
        training.run(_config(stopped))
    assert _snapshot(stopped) == before


def test_a_damaged_best_checkpoint_is_set_aside_and_said(stopped, caplog):
    best = stopped / "checkpoints" / "best.keras"
    best.write_bytes(best.read_bytes()[:1000])
    training.run(_config(stopped))
    assert "best.keras is damaged (not a whole .keras file" in caplog.text
    assert (stopped / "checkpoints" / "best.keras.damaged").exists()


def test_a_damaged_final_model_finishes_the_run_again(tmp_path, caplog):
    finished = tmp_path / "finished"
    training.run(_config(finished, epochs=1))
    final = finished / "final.keras"
    final.write_bytes(final.read_bytes()[:-100])
    metrics = training.run(_config(finished, epochs=1))  # not "already finished"
    assert metrics.epochs_run_this_session == 0
    assert "final.keras is damaged" in caplog.text
    assert keras.models.load_model(final) is not None


def test_a_failed_weights_write_is_one_line_never_a_crash(stopped, monkeypatch):
    """The weights are made in memory and written with Python's I/O: a full disk is an
    OSError there (h5py writing to it crashed the process, exit 139)."""
    import errno

    from bn_keras.train import workdir

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(workdir.atomic, "write_bytes", full)
    with pytest.raises(Unusable) as error:
        training.run(_config(stopped))
    message = str(error.value)
    assert "No space left on device; free some space on that disk." in message
    assert "Nothing committed is lost: 2 epoch(s) saved" in message
    assert not [n for n in os.listdir(stopped / "backup") if n.startswith(".tmp-")]


def test_a_study_does_not_take_a_finished_run_of_other_settings(stopped, tmp_path):
    """A run directory of a study holding a finished run of other settings is refused,
    never reported as that arm's result."""
    from bn_keras.study import runner

    training.run(_config(stopped))  # finished, bn_momentum 0.9
    arm_dir = tmp_path / "study" / "arm_seed0"
    shutil.copytree(stopped, arm_dir)
    with pytest.raises(ValueError, match="holds a run with other settings"):
        runner.run_study([runner.Arm("arm")], [0], _config(tmp_path, bn_momentum=0.5),
                         str(tmp_path / "study"))
