"""TensorBoard event files: writing a run's points, reading them back, and pruning them.

A run writes its points through `SummaryWriters`, one file writer per TensorBoard
run directory (`train`, `validation`, `test`, `bn_diagnostics`). When a stopped run
resumes, `prune_events` removes what its unfinished epoch had written, so the step
axis continues without writing a step twice.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import tensorflow as tf


class SummaryWriters:
    """One tf.summary file writer per TensorBoard run directory (`train`, `validation`, ...)."""

    def __init__(self, logdir: str):
        self.logdir = logdir
        self._writers: dict[str, Any] = {}

    def __call__(self, name: str):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.logdir, name))
        return self._writers[name]

    def scalars(self, name: str, step: int, values: dict[str, float]) -> None:
        """Writes scalars to run `name` at `step`, whatever summary recording is in force."""
        with self(name).as_default(step=step), tf.summary.record_if(True):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def prune_events(logdir: str, last_step: int) -> int:
    """Drops summaries with step > `last_step` from every event file under `logdir`.

    A run killed in the middle of an epoch has written TensorBoard points the
    resumed run writes again; without them the step axis continues without
    overlap. A record cut short by a kill is dropped too. Returns how many
    events were removed.
    """
    from tensorflow.core.util import event_pb2

    removed = 0
    for path in sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"),
                                 recursive=True)):
        kept, dropped, truncated = [], 0, False
        records = iter(tf.data.TFRecordDataset(path))
        while True:
            try:
                record = next(records).numpy()
            except StopIteration:
                break
            except tf.errors.DataLossError:  # the tail of a file cut off by a kill
                truncated = True
                break
            event = event_pb2.Event.FromString(record)
            if event.HasField("summary") and event.step > last_step:
                dropped += 1
            else:
                kept.append(record)
        if dropped or truncated:
            tmp = os.path.join(os.path.dirname(path), ".pruning.tmp")  # no "tfevents" in it
            with tf.io.TFRecordWriter(tmp) as writer:
                for record in kept:
                    writer.write(record)
            os.replace(tmp, path)
            removed += dropped
    return removed


def read_scalars(logdir: str, prefix: str) -> dict[str, list[tuple[int, float]]]:
    """Reads back scalars a writer put under `logdir`: {tag without `prefix`: [(step, value)]}.

    For example `read_scalars(<tensorboard>/bn_diagnostics, "grad_norm/")` gives each
    layer's gradient norm over training.
    """
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(logdir, size_guidance={"tensors": 0})
    accumulator.Reload()
    return {tag[len(prefix):]: [(e.step, float(tf.make_ndarray(e.tensor_proto)))
                                for e in accumulator.Tensors(tag)]
            for tag in accumulator.Tags()["tensors"] if tag.startswith(prefix)}
