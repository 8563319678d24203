"""TensorBoard event files: writing a run's points, reading them back, and pruning them.

A run writes its points through `SummaryWriters`, one file writer per TensorBoard
run directory (`train`, `validation`, `test`, `bn_diagnostics`). When a stopped run
resumes, `prune_events` removes what its unfinished epoch had written, so the step
axis continues without writing a step twice.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from bn_keras.errors import Unusable, cannot_write, write_failure

log = logging.getLogger(__name__)




class SummaryWriters:
    """One tf.summary file writer per TensorBoard run directory (`train`, `validation`, ...).

    Write through `writing(name, step)` (or `scalars`): a full disk or a read-only place
    then raises Unusable naming the directory, not TensorFlow's OpError.
    """

    def __init__(self, logdir: str):
        self.logdir = logdir
        self._writers: dict[str, Any] = {}

    def __call__(self, name: str):
        if name not in self._writers:
            with self._guard():
                self._writers[name] = tf.summary.create_file_writer(
                    os.path.join(self.logdir, name))
        return self._writers[name]

    @contextlib.contextmanager
    def writing(self, name: str, step: int) -> Iterator[None]:
        """Summaries written inside go to run `name` at `step`, whatever summary recording
        is in force."""
        with self._guard(), self(name).as_default(step=step), tf.summary.record_if(True):
            yield

    def scalars(self, name: str, step: int, values: dict[str, float]) -> None:
        """Writes scalars to run `name` at `step`."""
        with self.writing(name, step):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)

    def flush(self) -> None:
        with self._guard():
            for writer in self._writers.values():
                writer.flush()

    def close(self) -> None:
        with self._guard():
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except tf.errors.OpError as e:
            if write_failure(e) is None:
                raise
            raise cannot_write(f"TensorBoard events under {self.logdir}", e) from None


def prune_events(logdir: str, last_step: int) -> int:
    """Drops summaries with step > `last_step` from every event file under `logdir`.

    A run killed in the middle of an epoch has written TensorBoard points the
    resumed run writes again; without them the step axis continues without
    overlap. A record cut short by a kill (the file's last one) is dropped too.
    A file damaged before its end cannot be read past the damage, and TFRecord
    files cannot be resynchronised reliably: it is kept exactly as it is (TensorBoard
    shows its points up to the damage) and a log line names it. Returns how many
    events were removed.
    """
    from tensorflow.core.util import event_pb2

    removed = 0
    for path in sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"),
                                 recursive=True)):
        kept, dropped, cut, damaged = [], 0, False, False
        records = iter(tf.data.TFRecordDataset(path))
        while True:
            try:
                record = next(records).numpy()
            except StopIteration:
                break
            except tf.errors.DataLossError as e:
                # "truncated record": the last record, cut off by a kill; anything else
                # ("corrupted record at N") is damage before the end.
                cut, damaged = "truncated record" in str(e), "truncated record" not in str(e)
                break
            event = event_pb2.Event.FromString(record)
            if event.HasField("summary") and event.step > last_step:
                dropped += 1
            else:
                kept.append(record)
        if damaged:
            log.warning("note: %s is damaged after its first %d records; it is kept as it is "
                        "(TensorBoard shows the points before the damage).", path,
                        len(kept) + dropped)
        elif dropped or cut:
            _rewrite(path, kept)
            removed += dropped
    return removed


def _rewrite(path: str, records: list[bytes]) -> None:
    """`path` holding just `records`, through a temporary file (no "tfevents" in its name,
    so TensorBoard never reads it) and a rename."""
    tmp = os.path.join(os.path.dirname(path), f".pruning.{os.getpid()}.tmp")
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in records:
                writer.write(record)
        os.replace(tmp, path)
    except (OSError, tf.errors.OpError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise Unusable(f"cannot rewrite {path} without the unfinished epoch's points "
                       f"({reason}); free some space, or choose another `workdir`.") from None


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
