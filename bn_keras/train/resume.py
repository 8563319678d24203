"""The resume protocol: each finished epoch committed, so a stopped run continues exactly.

A run trains one epoch per `model.fit` call (bn_keras.train.training), on that
epoch's data, a function of (seed, epoch). After every callback has written the
epoch's logs and files, `EpochCommit` commits it to the work directory
(bn_keras.train.workdir): history, the state of the callbacks that keep any, and
the model and optimizer weights, atomically. `OneEpochPerFit` then ends the `fit`
call. A restarted run reads the last commit back (`Workdir.latest`), restores the
weights and the callbacks' state, and starts `fit` at the next epoch.
"""

from __future__ import annotations

import keras

from bn_keras.train.callbacks import EpochCallback
from bn_keras.train.events import SummaryWriters
from bn_keras.train.workdir import Resume, Workdir


class EpochCommit(EpochCallback):
    """Commits every completed epoch to the work directory: history, callback state,
    model and optimizer weights (bn_keras.train.workdir). Must run after every callback that
    writes the epoch's logs or files."""

    def __init__(self, workdir: Workdir, writers: SummaryWriters, resume: Resume,
                 stateful: list[EpochCallback]):
        super().__init__()
        self.workdir, self.writers, self.stateful = workdir, writers, stateful
        self.history = list(resume.history)
        saved = resume.state.get("callbacks", {})
        for callback in stateful:
            callback.set_state(saved.get(callback.state_key))

    def on_epoch_end(self, epoch, logs=None):
        # Epochs are numbered from 1, as the progress lines print them.
        self.history = [row for row in self.history if row["epoch"] <= epoch]
        self.history.append({"epoch": epoch + 1, "step": self.global_step(), **logs})
        self.writers.flush()  # the epoch's TensorBoard points are on disk before the commit
        self.workdir.commit(self.model, {
            "epoch": epoch + 1, "step": self.global_step(), "history": self.history,
            "callbacks": {c.state_key: c.get_state() for c in self.stateful}})


class OneEpochPerFit(keras.callbacks.Callback):
    """Ends `fit` after one epoch: bn_keras.train.training calls `fit` once per epoch, with that
    epoch's data (a function of the seed and the epoch)."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True
