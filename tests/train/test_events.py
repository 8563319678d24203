"""bn_keras.train.events: TensorBoard files written, read back and pruned on resume."""

import os

import tensorflow as tf

from bn_keras.train import events


def _write_events(logdir, steps, truncate=False):
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for step in steps:
            tf.summary.scalar("loss", float(step), step=step)
    writer.close()
    if truncate:
        path = next(p for p in logdir.iterdir() if "tfevents" in p.name)
        data = path.read_bytes()
        path.write_bytes(data[:-7])  # a record cut off by a kill


def test_prune_events_drops_what_the_unfinished_epoch_wrote(tmp_path):
    _write_events(tmp_path / "train", [0, 10, 20, 25, 30], truncate=True)
    removed = events.prune_events(str(tmp_path), last_step=20)
    assert removed == 1  # 25; the truncated 30 is dropped as unreadable
    assert events.read_scalars(str(tmp_path / "train"), "") == {
        "loss": [(0, 0.0), (10, 10.0), (20, 20.0)]}
    assert not any("tmp" in name for name in os.listdir(tmp_path / "train"))
