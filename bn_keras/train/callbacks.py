"""The Keras callbacks that measure and record each epoch of a run.

A run trains one epoch per `model.fit` call (bn_keras.train.training); these
callbacks see it as ordinary epochs. In the order a run passes them to `fit`:

- `Throughput`: training images/s of each epoch (validation excluded).
- `LearningRateLog`: the learning rate after each epoch.
- `LossEveryN`: the mean training loss of every window of N steps (the
  tutorial's printed running loss; TensorBoard's `train/batch_loss`).
- `NaNGuard`: stops training when the loss becomes NaN or inf, and says where.
- `EvaluateEachEpoch`: test loss and accuracy after every epoch (the BN study).
- `EpochSummaries`: one TensorBoard point per epoch of every logged value.
- `BNDiagnostics`: gradient norms, pre-activation statistics and BN weights on
  a fixed probe batch (bn_keras.train.diagnostics) at step 0, after every epoch and
  every N steps.
- `BestCheckpoint`: `checkpoints/best.keras` at the best validation accuracy.
- `EpochLog`: one line per epoch, for logs that are not a terminal.

After them come the resume protocol's (bn_keras.train.resume): `EpochCommit`,
which commits the epoch to the work directory, and `OneEpochPerFit`.

Keras reports steps in chunks of `steps_per_execution`; a callback that needs
a value every N steps sees it at the first report at or after the step. The
x-axis of every TensorBoard point is the global training step
`epoch * steps_per_epoch + steps done in the epoch`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bn_keras.train import diagnostics
from bn_keras.train.events import SummaryWriters
from bn_keras.train.results import LossPoint
from bn_keras.train.workdir import Workdir

log = logging.getLogger(__name__)


def steps_done(params: dict | None, batch: int) -> int:
    """Training steps finished in the epoch when Keras reports the end of `batch`.

    With `steps_per_execution` k Keras reports each chunk of k steps by its last index,
    begin + k - 1, even for an epoch's shorter final chunk; the epoch's length caps it.
    """
    total = (params or {}).get("steps")
    return min(batch + 1, total) if total else batch + 1


class EpochCallback(keras.callbacks.Callback):
    """Knows the epoch and the global step; optionally keeps state across a resume."""

    state_key: str | None = None  # set by callbacks whose state EpochCommit saves

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    @property
    def steps_per_epoch(self) -> int:
        return self.params["steps"]

    def global_step(self, steps_in_epoch: int | None = None) -> int:
        steps = self.steps_per_epoch if steps_in_epoch is None else steps_in_epoch
        return self.epoch * self.steps_per_epoch + steps

    def get_state(self) -> Any:
        return None

    def set_state(self, state: Any) -> None:
        pass


class Throughput(EpochCallback):
    """Training images per second of each epoch, from its start to its last step."""

    def __init__(self, examples_per_epoch: int):
        super().__init__()
        self.examples_per_epoch = examples_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._start = self._end = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = max(self._end - self._start, 1e-9)
        logs["images_per_second"] = self.examples_per_epoch / seconds
        logs["epoch_seconds"] = time.perf_counter() - self._start


class LearningRateLog(EpochCallback):
    """The optimizer's learning rate after the epoch's last step."""

    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


class LossEveryN(EpochCallback):
    """Mean training loss over each window of `n` steps, as the tutorial printed it.

    `points` holds LossPoints (global step, window mean, 1-based epoch). Windows restart every
    epoch, like the tutorial's running loss; an epoch's tail shorter than `n` is not
    reported. Keras reports every `steps_per_execution`-th step; a window ends at the
    first report at or after `n` steps (so windows are exact when it divides `n`).
    The running mean Keras reports weights batches by size, so a window holding an
    epoch's short last batch is slightly approximate. Each window is also written to
    TensorBoard as `train/batch_loss`.
    """

    state_key = "loss_every_n"

    def __init__(self, n: int, writers: SummaryWriters | None = None):
        super().__init__()
        self.n = n
        self.writers = writers
        self.points: list[LossPoint] = []

    def get_state(self):
        return self.points

    def set_state(self, state):
        self.points = [LossPoint(*p) for p in state or []]

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.points = [p for p in self.points if p.epoch <= epoch]  # a resumed epoch: clean
        self._epoch_sum, self._epoch_steps = 0.0, 0
        self._window_sum, self._window_count = 0.0, 0

    def on_train_batch_end(self, batch, logs=None):
        # Keras reports the running mean over the epoch so far; recover the sum of the
        # losses of the steps since its last report.
        steps = steps_done(self.params, batch)
        epoch_sum = float(logs["loss"]) * steps
        self._window_sum += epoch_sum - self._epoch_sum
        self._window_count += steps - self._epoch_steps
        self._epoch_sum, self._epoch_steps = epoch_sum, steps
        if self._window_count >= self.n:
            point = LossPoint(self.global_step(steps), self._window_sum / self._window_count,
                              self.epoch + 1)
            self.points.append(point)
            if self.writers is not None:
                self.writers.scalars("train", point.step, {"batch_loss": point.loss})
            self._window_sum, self._window_count = 0.0, 0


class NaNGuard(EpochCallback):
    """Stops training once the loss is NaN or inf; `diverged_at` = (epoch, first, last):
    the 0-based epoch and the 1-based range of its steps in which it happened (one step
    with steps_per_execution=1, else the reported chunk)."""

    def __init__(self):
        super().__init__()
        self.diverged_at: tuple[int, int, int] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._reported = 0

    def on_train_batch_end(self, batch, logs=None):
        steps = steps_done(self.params, batch)
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)) and self.diverged_at is None:
            self.diverged_at = (self.epoch, self._reported + 1, steps)
            self.model.stop_training = True
        self._reported = steps

    def describe(self) -> str:
        epoch, first, last = self.diverged_at
        where = f"step {last}" if first == last else f"steps {first}-{last}"
        return f"epoch {epoch + 1}, {where} of the epoch"


class EvaluateEachEpoch(EpochCallback):
    """Test loss and accuracy after every epoch (the tutorial's per-epoch test figure)."""

    def __init__(self, dataset: tf.data.Dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_end(self, epoch, logs=None):
        loss, accuracy = self.model.evaluate(self.dataset, verbose=0)
        logs["test_loss"], logs["test_accuracy"] = float(loss), float(accuracy)


class EpochSummaries(EpochCallback):
    """One TensorBoard point per epoch of every value in the epoch's logs.

    `val_x` goes to `validation/epoch_x`, `test_x` to `test/epoch_x`, everything
    else (loss, accuracy, learning_rate, images_per_second) to `train/epoch_x`,
    at the global step of the epoch's end: the x-axis of the BN diagnostics.
    """

    RUNS = (("val_", "validation"), ("test_", "test"))

    def __init__(self, writers: SummaryWriters):
        super().__init__()
        self.writers = writers

    def on_epoch_end(self, epoch, logs=None):
        by_run: dict[str, dict[str, float]] = {}
        for key, value in logs.items():
            run, tag = "train", key
            for prefix, name in self.RUNS:
                if key.startswith(prefix):
                    run, tag = name, key[len(prefix):]
            tag = tag if tag.startswith("epoch_") else f"epoch_{tag}"
            by_run.setdefault(run, {})[tag] = value
        for run, values in by_run.items():
            self.writers.scalars(run, self.global_step(), values)


class BNDiagnostics(EpochCallback):
    """Writes bn_keras.train.diagnostics' probe results to TensorBoard's `bn_diagnostics` run.

    Histograms `bn/<layer>/<weight>` and `preactivation/<relu>`; scalars
    `grad_norm/<layer>`, `preactivation_mean/<relu>`, `preactivation_std/<relu>`.
    Written at step 0 (before the first step a run trains), after every epoch, and
    every `every_n_steps` steps if set.
    """

    state_key = "bn_diagnostics"

    def __init__(self, writers: SummaryWriters, probe_inputs, probe_labels,
                 every_n_steps: int | None = None):
        super().__init__()
        self.writers = writers
        self.probe_inputs = tf.convert_to_tensor(probe_inputs)
        self.probe_labels = tf.convert_to_tensor(probe_labels)
        self.every_n_steps = every_n_steps
        self.written_at = -1
        self._probe = None

    def get_state(self):
        return self.written_at

    def set_state(self, state):
        self.written_at = -1 if state is None else int(state)

    def set_model(self, model):
        super().set_model(model)
        if self._probe is None or self._probe.model is not model:
            self._probe = diagnostics.Probe(model)

    def on_train_begin(self, logs=None):
        if self.written_at < 0:  # a fresh run: the network as initialized
            self.write(0)

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution Keras reports every k-th step only: write whenever
        # a multiple of every_n_steps has been passed since the last write.
        n = self.every_n_steps
        step = self.global_step(steps_done(self.params, batch))
        if n and step // n > self.written_at // n:
            self.write(step)

    def on_epoch_end(self, epoch, logs=None):
        if self.global_step() != self.written_at:
            self.write(self.global_step())

    def write(self, step: int) -> None:
        values = self._probe(self.probe_inputs, self.probe_labels)
        self.written_at = step
        with self.writers.writing("bn_diagnostics", step):
            for name, weights in values["bn"].items():
                tf.summary.histogram(f"bn/{name}", weights)
            for name, norm in values["grad_norm"].items():
                tf.summary.scalar(f"grad_norm/{name}", norm)
            for name, preact in values["preactivation"].items():
                tf.summary.scalar(f"preactivation_mean/{name}", float(preact.mean()))
                tf.summary.scalar(f"preactivation_std/{name}", float(preact.std()))
                tf.summary.histogram(f"preactivation/{name}", preact)


class BestCheckpoint(EpochCallback):
    """Saves the model whenever the validation accuracy beats every earlier epoch's."""

    state_key = "best_val_accuracy"

    def __init__(self, workdir: Workdir):
        super().__init__()
        self.workdir = workdir
        self.best = -np.inf

    def get_state(self):
        return None if not np.isfinite(self.best) else self.best

    def set_state(self, state):
        self.best = -np.inf if state is None else float(state)

    def on_epoch_end(self, epoch, logs=None):
        value = logs.get("val_accuracy")
        if value is not None and value > self.best:
            self.best = value
            self.workdir.save_model(self.model, self.workdir.best)


class EpochLog(EpochCallback):
    """One line per epoch through logging: for logs that are not a terminal."""

    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "test_accuracy", "learning_rate")

    def on_epoch_end(self, epoch, logs=None):
        values = " ".join(f"{k} {logs[k]:.4g}" for k in self.KEYS if k in logs)
        log.info("epoch %d/%d: %s; %.0f images/s, %.1f s", epoch + 1, self.params["epochs"],
                 values, logs.get("images_per_second", float("nan")),
                 logs.get("epoch_seconds", float("nan")))
