"""A training run's work directory: what it holds, and where a stopped run continues.

    workdir/
      .lock                    held by the process writing here (bn_keras.locking)
      config.json              the configuration of the run
      backup/epoch-NNNN/       the state after each of the last two completed epochs:
                               model and optimizer weights (model.weights.h5) and
                               state.json (step, per-epoch history, callback state, the
                               weights' SHA-256); kept when the run finishes
      metrics.csv              one row per completed epoch, rewritten from the state
      tensorboard/             train/, validation/, bn_diagnostics/ event files
      checkpoints/best.keras   the model with the best validation accuracy
      final.keras, final_metrics.json   written last: final_metrics.json marks a finished run
      bn_doctor.json           the BN doctor on final.keras (experiments/train.py)
      .workers/                scratch space of other workers of a multi-worker run

An epoch is committed by writing its state into a temporary directory and
renaming it to `backup/epoch-NNNN`: a run killed at any moment (Ctrl-C, SIGKILL,
a crash, also in the middle of that write) leaves the previous epoch's state
whole. A restarted run checks the newest commit (its files parse, the weights
match their recorded checksum) before it trusts it, falling back to the one
before it, with a line that says so; it drops what the unfinished epoch had
written to TensorBoard (events after the committed step), removes the temporary
files a killed run left, and carries on; with the training data a function of
(seed, epoch) (bn_keras.data.pipelines), the result equals an uninterrupted
run's. bn_keras.train.resume commits the epochs. Every file that cannot be read
or written is named in one line with what to do (bn_keras.errors).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

import keras

from bn_keras import atomic, keras_compat
from bn_keras.errors import (
    AlreadyExists,
    DamagedFile,
    InvalidSetting,
    Unusable,
    UserError,
    cannot_write,
    write_failure,
)
from bn_keras.locking import LOCK_FILE, DirectoryLock
from bn_keras.train.config import TrainConfig, resume_conflicts
from bn_keras.train.events import prune_events
from bn_keras.train.results import RunResult

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.weights.h5"
STATE_FILE = "state.json"
KEPT_COMMITS = 2  # the newest, and one to fall back on if the newest is damaged
WORKERS_DIR = ".workers"
_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")
_COMMIT_TMP = re.compile(r"^\.tmp-\d{4,}-\d+$")
# Temporary files as bn_keras 0.1.0 named them (`.metrics.csv.PID.tmp`, `.tmp-PID-best.keras`).
_OLD_TMP = re.compile(r"^(\..+\.\d+\.tmp|\.tmp-\d+-.+\.keras)$")


class NotWritten(Unusable):
    """A write of the run failed; the message names the file and what is kept."""


@dataclasses.dataclass
class Resume:
    """Where a run starts: 0 epochs for a fresh run, else the last committed epoch's state."""

    epoch: int = 0
    step: int = 0
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint: str | None = None

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.get("history", [])


class Workdir:
    """The files of one run under `path` (see the module docstring)."""

    def __init__(self, path: str):
        self.path = path
        self.config = os.path.join(path, "config.json")
        self.metrics_csv = os.path.join(path, "metrics.csv")
        self.tensorboard = os.path.join(path, "tensorboard")
        self.backup = os.path.join(path, "backup")
        self.best = os.path.join(path, "checkpoints", "best.keras")
        self.final_model = os.path.join(path, "final.keras")
        self.final_metrics = os.path.join(path, "final_metrics.json")

    def locked(self) -> DirectoryLock:
        """This process as the directory's one writer, for a `with` block; raises InUse,
        naming the other process, when another holds it."""
        self._refuse_a_file()
        return DirectoryLock(self.path, "workdir", "`workdir`")

    # ----------------------------------------------------------------- reading
    def latest(self) -> Resume:
        """The newest committed epoch whose files are whole (epoch 0 when there is none).

        A damaged newest commit (unparsable state, weights that do not match their
        checksum) is named in a log line and the one before it is used; when no
        commit is whole, DamagedFile says which and what to do.
        """
        if os.path.lexists(self.backup) and not os.path.isdir(self.backup):
            raise Unusable(f"{self.backup} is not a directory, so the run's committed epochs "
                           "cannot be read; move it aside (the run then starts from epoch 0) "
                           "or choose another `workdir`.")
        epochs = sorted((int(m.group(1)) for name in _listdir(self.backup)
                         if (m := _EPOCH_DIR.match(name))), reverse=True)
        damage = None
        for epoch in epochs:
            directory = os.path.join(self.backup, f"epoch-{epoch:04d}")
            try:
                resume = _read_commit(directory)
            except DamagedFile as e:
                log.warning("note: %s is damaged (%s); resuming from the epoch committed "
                            "before it.", e.path, e.reason)
                damage = damage or e
                continue
            return resume
        if damage is not None:
            raise DamagedFile(damage.path, damage.reason,
                              f"no committed epoch of {self.path} is whole: move {self.backup} "
                              "aside to start again from epoch 0, or choose another `workdir`")
        return Resume()

    def read_config(self) -> dict[str, Any] | None:
        """The recorded configuration (None for a new run); DamagedFile says what to do."""
        try:
            return atomic.read_json(self.config, kind=dict)
        except DamagedFile as e:
            raise DamagedFile(e.path, e.reason, "the run's settings are unknown: put the "
                              "file back, or choose another `workdir`") from None

    def read_final(self) -> RunResult | None:
        """The RunResult of a finished run (final_metrics.json; None if unfinished), epochs
        numbered from 1. A damaged one counts as missing, with a log line: the run is
        finished again."""
        try:
            final = atomic.read_json(self.final_metrics, kind=dict)
            if final is None:
                return None
            result = RunResult.from_json(final)
        except DamagedFile as e:
            log.warning("note: %s is damaged (%s); the run's last step (test evaluation, "
                        "final files) runs again.", e.path, e.reason)
            return None
        except (KeyError, TypeError, ValueError) as e:
            log.warning("note: %s is damaged (it is not a run's result: %s); the run's last "
                        "step (test evaluation, final files) runs again.", self.final_metrics,
                        e)
            return None
        problem = keras_file_problem(self.final_model)
        if problem is not None:
            log.warning("note: %s is damaged (%s); the run's last step (test evaluation, "
                        "final files) runs again.", self.final_model, problem)
            return None
        result.history = numbered_from_one(result.history)
        return result

    def check(self, config: TrainConfig) -> Resume:
        """Where `config` starts in this directory; raises, writing nothing, if it cannot.

        AlreadyExists: the path is a file, or holds a finished run of `config`.
        InvalidSetting: it holds a run of other settings (listed), or one that cannot be
        extended to `config.epochs`. DamagedFile: a file a resume needs is damaged.
        """
        self._refuse_a_file()
        previous = self.read_config()
        if previous is None:
            self._refuse_what_is_not_a_new_run()
            return Resume()
        unknown = sorted(set(previous) - {f.name for f in dataclasses.fields(TrainConfig)})
        if unknown:
            raise InvalidSetting(
                f"workdir {self.path!r} holds a run with settings this version of bn_keras "
                f"does not know ({', '.join(unknown)}): it was written by a newer one; resume "
                "it with that version, or choose another `workdir`.")
        resume = self.latest()
        conflict = resume_conflicts(previous, config, resume.epoch)
        if conflict:
            raise InvalidSetting(f"workdir {self.path!r}: {conflict}; resume it with the same "
                                 "flags or choose another `workdir`.")
        finished = self.read_final()
        if finished is not None and finished.epochs == config.epochs:
            raise AlreadyExists(
                f"workdir {self.path!r} already holds a finished run of {config.epochs} epochs; "
                "choose another `workdir`, or raise `epochs` to train it further.")
        return resume

    def _refuse_what_is_not_a_new_run(self) -> None:
        """Without config.json, a workdir is new only if it holds nothing a run keeps: it may
        be missing, empty, or hold a lock and a killed run's temporary files. Committed
        epochs without their config are a damaged run (never emptied); anything else is
        someone's files (never pruned)."""
        names = sorted(name for name in _listdir(self.path)
                       if name not in (LOCK_FILE, WORKERS_DIR) and not atomic.is_temporary(name))
        if not names:
            return
        commits = [n for n in _listdir(self.backup) if _EPOCH_DIR.match(n)]
        if commits or os.path.exists(self.final_metrics):
            raise DamagedFile(
                self.config, "missing, while the workdir holds a run "
                f"({len(commits)} committed epoch(s) in backup/"
                f"{', final_metrics.json' if os.path.exists(self.final_metrics) else ''})",
                "the run's settings are unknown, so nothing of it is pruned or overwritten: "
                "put config.json back, or choose another `workdir`")
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise AlreadyExists(
            f"workdir {self.path!r} holds files no run of bn_keras wrote there ({shown}) and "
            "no config.json: nothing in it is touched; choose an empty or new directory.")

    def _refuse_a_file(self) -> None:
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise AlreadyExists(f"workdir={self.path!r} is a file, not a directory; "
                                "choose a directory path.")

    # ----------------------------------------------------------------- writing
    def start(self, config: TrainConfig, resume: Resume) -> None:
        """Records the configuration and clears what the unfinished epoch, or a killed run's
        temporary files, left behind. Call it holding the lock (`locked`)."""
        with self.writing(self.path):
            os.makedirs(self.path, exist_ok=True)
            self._remove_leftovers()
            self._set_aside_a_damaged_best()
            atomic.write_json(self.config, dataclasses.asdict(config))
            if os.path.exists(self.final_metrics):  # continuing a finished run: unfinished
                os.remove(self.final_metrics)
            prune_events(self.tensorboard, resume.step if resume.epoch else -1)
            self.write_metrics_csv(resume.history)

    def restore(self, model: keras.Model, resume: Resume) -> None:
        """Loads the committed model and optimizer state into `model` (compiled, built)."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its weights must exist to load
        model.load_weights(resume.checkpoint)

    def commit(self, model: keras.Model, state: dict[str, Any]) -> None:
        """Makes `state` (epoch, step, history, ...) and the model's weights the latest;
        keeps the commit before it, removes older ones."""
        epoch = state["epoch"]
        tmp = os.path.join(self.backup, f".tmp-{epoch:04d}-{os.getpid()}")
        target = os.path.join(self.backup, f"epoch-{epoch:04d}")
        with self.writing(self.backup, tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            weights = os.path.join(tmp, WEIGHTS_FILE)
            # Made in memory, written with Python's I/O: h5py writing to a full disk
            # itself can crash the process (a segmentation fault), which nothing catches.
            atomic.write_bytes(weights, keras_compat.weights_h5_bytes(model))
            atomic.write_json(os.path.join(tmp, STATE_FILE),
                              checksummed({**state, "weights_sha256": atomic.sha256(weights)}))
            atomic.publish_directory(tmp, target)  # the commit point, on the disk
            for name in _listdir(self.backup):
                m = _EPOCH_DIR.match(name)
                if m and int(m.group(1)) <= epoch - KEPT_COMMITS:
                    shutil.rmtree(os.path.join(self.backup, name), ignore_errors=True)
            self.write_metrics_csv(state["history"])

    def write_metrics_csv(self, history: list[dict[str, Any]]) -> None:
        """metrics.csv: one row per committed epoch, `epoch` (from 1) first."""
        if not history:
            if os.path.exists(self.metrics_csv):
                os.remove(self.metrics_csv)
            return
        columns = ["epoch"] + sorted({k for row in history for k in row} - {"epoch"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({c: _csv_value(row.get(c)) for c in columns})
        atomic.write_text(self.metrics_csv, buffer.getvalue())

    def save_model(self, model: keras.Model, path: str) -> None:
        """`model.save(path)`, made in memory (see `commit`), through a temporary file and a
        rename."""
        with self.writing(path):
            atomic.write_bytes(path, keras_compat.keras_file_bytes(model))

    def finish(self, model: keras.Model, result: RunResult) -> None:
        """The final model, then final_metrics.json, the mark of a finished run."""
        self.save_model(model, self.final_model)
        with self.writing(self.final_metrics):
            atomic.write_json(self.final_metrics, result.to_json())

    @contextlib.contextmanager
    def writing(self, path: str, tmp: str | None = None) -> Iterator[None]:
        """A failed write under `path` (full disk, read-only, no permission) -> one line
        naming it, with what is kept (`NotWritten`); `tmp`, the write's temporary file or
        directory, is removed. (Weights and models are made in memory and written with
        Python's I/O, so a full disk is an OSError here, never a crash in h5py.)"""
        try:
            yield
        except (OSError, ValueError) as e:
            if isinstance(e, NotWritten) or not _is_write_failure(e):
                raise
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                _remove(tmp)
            if not isinstance(e, Unusable):
                e = cannot_write(path, e)
            raise NotWritten(f"{e} {self._kept()}") from None

    def _kept(self) -> str:
        try:
            epochs = self.latest().epoch
        except Unusable:
            epochs = 0
        return (f"Nothing committed is lost: {epochs} epoch(s) saved in {self.path}; run the "
                "same command again to resume." if epochs else "No epoch had been saved yet.")

    def _set_aside_a_damaged_best(self) -> None:
        """A damaged checkpoints/best.keras (cut short, altered) is moved to
        best.keras.damaged, with a line saying what follows: export would fail on it."""
        if not os.path.exists(self.best):
            return
        problem = keras_file_problem(self.best)
        if problem is None:
            return
        os.replace(self.best, self.best + ".damaged")
        log.warning("note: %s is damaged (%s); moved to %s.damaged. The best checkpoint is "
                    "written again when an epoch beats the best validation accuracy so far; "
                    "until then an export takes final.keras.", self.best, problem, self.best)

    def _remove_leftovers(self) -> None:
        """Temporary files and half-written commits a killed run left (the lock is held: no
        live process of this workdir owns them)."""
        runs = [os.path.join(self.tensorboard, run) for run in _listdir(self.tensorboard)]
        for directory in (self.path, os.path.dirname(self.best), self.backup, *runs):
            for name in _listdir(directory):
                path = os.path.join(directory, name)
                if atomic.is_temporary(name) or _OLD_TMP.match(name):
                    _remove(path)
                elif directory == self.backup and _COMMIT_TMP.match(name):
                    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def worker_scratch(workdir: str, task: str) -> Iterator[str]:
    """A private directory for one non-chief worker of a multi-worker run to write to,
    removed when the run ends: `workdir/.workers/<task>-<pid>-<random>`, made with
    `tempfile.mkdtemp` (a new, unpredictable name; nothing planted there beforehand is
    followed). Scratch left by this task's workers that no longer run is removed first.
    Non-chief workers read where to resume from the chief's workdir."""
    parent = os.path.join(workdir, WORKERS_DIR)
    try:
        os.makedirs(parent, exist_ok=True)
        info = os.lstat(parent)
        if not stat.S_ISDIR(info.st_mode):
            raise Unusable(f"{parent} is not a directory (a link or a file); remove it.")
        for name in os.listdir(parent):
            if name.startswith(f"{task}-") and not _alive(name.split("-")[1]):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        path = tempfile.mkdtemp(prefix=f"{task}-{os.getpid()}-", dir=parent)
    except OSError as e:
        raise cannot_write(parent, e, "choose a writable `workdir`") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(parent)  # only when no other worker's scratch is left


def numbered_from_one(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's per-epoch history with epochs numbered from 1, as they are printed; earlier
    versions of the package wrote them from 0."""
    if history and history[0].get("epoch") == 0:
        return [{**row, "epoch": row["epoch"] + 1} for row in history]
    return history


def describe(path: str) -> str:
    """What a run's work directory holds, in a sentence, for an interrupted user."""
    workdir = Workdir(path)
    config = workdir.read_config()
    if config is None:
        return f"nothing saved yet in {path} (the run was starting)"
    return f"{workdir.latest().epoch} of {config.get('epochs', '?')} epochs saved in {path}"


def _read_commit(directory: str) -> Resume:
    """One committed epoch, checked: state.json parses and holds what a resume needs, and
    the weights file is whole (its SHA-256 as recorded, where it was)."""
    state_path = os.path.join(directory, STATE_FILE)
    weights = os.path.join(directory, WEIGHTS_FILE)
    state = atomic.read_json(state_path, kind=dict)
    if state is None:
        raise DamagedFile(state_path, "missing")
    recorded = state.get("checksum")  # commits before 0.2 recorded none
    if recorded is not None and recorded != checksummed(state)["checksum"]:
        raise DamagedFile(state_path, "its content differs from the checksum recorded when "
                                      "the epoch was committed")
    if not (isinstance(state.get("epoch"), int) and isinstance(state.get("step"), int)
            and isinstance(state.get("history"), list)
            and all(isinstance(row, dict) and isinstance(row.get("epoch"), int)
                    for row in state["history"])
            and isinstance(state.get("callbacks", {}), dict)):
        raise DamagedFile(state_path, "it lacks the epoch, step, history or callback state of "
                                      "a commit")
    folder = int(_EPOCH_DIR.match(os.path.basename(directory)).group(1))
    if state["epoch"] != folder or len(state["history"]) != folder:
        raise DamagedFile(state_path, f"it says epoch {state['epoch']} with "
                                      f"{len(state['history'])} epochs of history, in the "
                                      f"folder of epoch {folder}")
    if not os.path.isfile(weights):
        raise DamagedFile(weights, "missing")
    recorded = state.get("weights_sha256")  # commits of 0.1.0 recorded none
    if recorded is not None and atomic.sha256(weights) != recorded:
        raise DamagedFile(weights, "its checksum differs from the one recorded when the "
                                   "epoch was committed")
    state["history"] = numbered_from_one(state["history"])
    return Resume(epoch=state["epoch"], step=state["step"], state=state, checkpoint=weights)


def keras_file_problem(path: str) -> str | None:
    """Why the .keras file at `path` is not whole (not a zip, a member failing its CRC, a
    part missing), or None; a missing file is None too."""
    if not os.path.exists(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        return f"not a whole .keras file: {e}"
    if bad is not None:
        return f"its {bad} fails its checksum"
    if not {"config.json", "model.weights.h5"} <= names:
        return "it lacks its config.json or model.weights.h5"
    return None


def checksummed(state: dict[str, Any]) -> dict[str, Any]:
    """`state` with "checksum": the SHA-256 of its canonical JSON without that key, so one
    changed digit in a committed state.json is noticed, not resumed from."""
    body = {k: v for k, v in state.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, default=str)
    return {**body, "checksum": hashlib.sha256(text.encode()).hexdigest()}


def _is_write_failure(error: Exception) -> bool:
    """A place that cannot be written (full, read-only, forbidden): an Unusable of ours, an
    OSError, or Keras' and h5py's ValueError/OSError wrapping one (their messages carry
    "errno = 28" and the like instead of an errno attribute)."""
    if isinstance(error, Unusable):
        return not isinstance(error, DamagedFile)
    if isinstance(error, UserError):
        return False
    return write_failure(error) is not None


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def _listdir(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []


def _csv_value(value: Any) -> Any:
    return "" if value is None else value
