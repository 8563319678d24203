"""A training run's work directory: what it holds, and where a stopped run continues.

    workdir/
      config.json              the configuration of the run
      backup/epoch-NNNN/       the state after the last completed epoch: model and
                               optimizer weights (model.weights.h5) and state.json
                               (step, per-epoch history, best validation accuracy,
                               callback state); kept when the run finishes
      metrics.csv              one row per completed epoch, rewritten from the state
      tensorboard/             train/, validation/, bn_diagnostics/ event files
      checkpoints/best.keras   the model with the best validation accuracy
      final.keras, final_metrics.json   written last: final_metrics.json marks a finished run

An epoch is committed by writing its state into a temporary directory and
renaming it to `backup/epoch-NNNN`: a run killed at any moment (Ctrl-C, SIGKILL,
a crash, also in the middle of that write) leaves the previous epoch's state
whole. A restarted run reloads it, drops what the unfinished epoch had written
to TensorBoard (events after the committed step) and carries on; with the
training data a function of (seed, epoch) (bn_keras.data.pipelines), the result
equals an uninterrupted run's. bn_keras.train.resume commits the epochs.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import shutil
from typing import Any

import keras

from bn_keras import atomic
from bn_keras.errors import AlreadyExists, InvalidSetting
from bn_keras.train.config import TrainConfig, resume_conflicts
from bn_keras.train.events import prune_events

WEIGHTS_FILE = "model.weights.h5"
STATE_FILE = "state.json"
_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")


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

    # ----------------------------------------------------------------- reading
    def latest(self) -> Resume:
        """The last committed epoch's state (epoch 0 when there is none)."""
        epochs = sorted(int(m.group(1)) for name in _listdir(self.backup)
                        if (m := _EPOCH_DIR.match(name)))
        if not epochs:
            return Resume()
        directory = os.path.join(self.backup, f"epoch-{epochs[-1]:04d}")
        state = atomic.read_json(os.path.join(directory, STATE_FILE))
        state["history"] = numbered_from_one(state.get("history", []))
        return Resume(epoch=state["epoch"], step=state["step"], state=state,
                      checkpoint=os.path.join(directory, WEIGHTS_FILE))

    def read_final(self) -> dict[str, Any] | None:
        """final_metrics.json of a finished run (None if unfinished), epochs numbered from 1."""
        final = atomic.read_json(self.final_metrics)
        if final is not None:
            final["history"] = numbered_from_one(final.get("history", []))
        return final

    def check(self, config: TrainConfig) -> Resume:
        """Where `config` starts in this directory; raises, writing nothing, if it cannot.

        AlreadyExists: the path is a file, or holds a finished run of `config`.
        InvalidSetting: it holds a run of other settings (listed), or one that cannot be
        extended to `config.epochs`.
        """
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise AlreadyExists(f"--workdir={self.path!r} is a file, not a directory; "
                                  "choose a directory path.")
        previous = atomic.read_json(self.config)
        if previous is None:
            return Resume()
        resume = self.latest()
        conflict = resume_conflicts(previous, config, resume.epoch)
        if conflict:
            raise InvalidSetting(f"workdir {self.path!r}: {conflict}; resume it with the same "
                                 "flags or choose another --workdir.")
        finished = atomic.read_json(self.final_metrics)
        if finished is not None and finished.get("epochs") == config.epochs:
            raise AlreadyExists(
                f"workdir {self.path!r} already holds a finished run of {config.epochs} epochs; "
                "choose another --workdir, or raise --epochs to train it further.")
        return resume

    # ----------------------------------------------------------------- writing
    def start(self, config: TrainConfig, resume: Resume) -> None:
        """Records the configuration and clears what the unfinished epoch left behind."""
        os.makedirs(self.path, exist_ok=True)
        atomic.write_json(self.config, dataclasses.asdict(config))
        for path in (self.final_metrics,):  # continuing a finished run: no longer finished
            if os.path.exists(path):
                os.remove(path)
        prune_events(self.tensorboard, resume.step if resume.epoch else -1)
        self.write_metrics_csv(resume.history)
        for name in _listdir(self.backup):  # half-written commits of a killed run
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(self.backup, name), ignore_errors=True)

    def restore(self, model: keras.Model, resume: Resume) -> None:
        """Loads the committed model and optimizer state into `model` (compiled, built)."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its weights must exist to load
        model.load_weights(resume.checkpoint)

    def commit(self, model: keras.Model, state: dict[str, Any]) -> None:
        """Makes `state` (epoch, step, history, ...) and the model's weights the latest."""
        epoch = state["epoch"]
        os.makedirs(self.backup, exist_ok=True)
        tmp = os.path.join(self.backup, f".tmp-{epoch:04d}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        model.save_weights(os.path.join(tmp, WEIGHTS_FILE))
        atomic.write_json(os.path.join(tmp, STATE_FILE), state)
        target = os.path.join(self.backup, f"epoch-{epoch:04d}")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)  # the commit point
        for name in _listdir(self.backup):
            m = _EPOCH_DIR.match(name)
            if m and int(m.group(1)) < epoch:
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
        """`model.save(path)` through a temporary file and a rename."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
        model.save(tmp)
        os.replace(tmp, path)

    def finish(self, model: keras.Model, metrics: dict[str, Any]) -> None:
        """The final model, then final_metrics.json, the mark of a finished run."""
        self.save_model(model, self.final_model)
        atomic.write_json(self.final_metrics, metrics)


def numbered_from_one(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's per-epoch history with epochs numbered from 1, as they are printed; earlier
    versions of the package wrote them from 0."""
    if history and history[0].get("epoch") == 0:
        return [{**row, "epoch": row["epoch"] + 1} for row in history]
    return history


def describe(path: str) -> str:
    """What a run's work directory holds, in a sentence, for an interrupted user."""
    workdir = Workdir(path)
    config = atomic.read_json(workdir.config) or {}
    done = workdir.latest().epoch
    total = config.get("epochs", "?")
    return f"{done} of {total} epochs saved in {path}"


def _listdir(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []


def _csv_value(value: Any) -> Any:
    return "" if value is None else value
