"""bn_keras.train.callbacks, fed epochs the way Keras reports them."""

import numpy as np
import pytest

from bn_keras.train import callbacks, events


def _report(callback, epoch, batch_losses, k, steps):
    """Feeds `callback` an epoch as Keras reports it: every k-th step, running means."""
    callback.set_params({"steps": steps, "epochs": 3})
    callback.on_epoch_begin(epoch)
    for end in range(k - 1, steps + k - 1, k):  # Keras: begin + k - 1, even past the end
        callback.on_train_batch_end(end, {"loss": np.mean(batch_losses[: end + 1])})
    logs = {}
    callback.on_epoch_end(epoch, logs)
    return logs


def test_loss_every_n_recovers_window_means():
    callback = callbacks.LossEveryN(2)
    _report(callback, 0, [4.0, 2.0, 3.0, 1.0], k=1, steps=4)
    assert callback.points == [(2, pytest.approx(3.0), 1), (4, pytest.approx(2.0), 1)]


def test_loss_every_n_caps_a_short_last_chunk_and_keeps_global_steps():
    callback = callbacks.LossEveryN(4)
    losses = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 100.0]  # 9 steps, reported every 4
    _report(callback, 0, losses, k=4, steps=9)
    _report(callback, 1, losses, k=4, steps=9)
    # The 9th step (a chunk of 1 reported as step 11) is too short a window; epoch 2
    # starts at global step 9, not 12.
    assert callback.points == [(4, pytest.approx(2.5), 1), (8, pytest.approx(6.5), 1),
                               (13, pytest.approx(2.5), 2), (17, pytest.approx(6.5), 2)]


def test_loss_every_n_state_drops_an_epoch_that_is_run_again():
    first = callbacks.LossEveryN(2)
    _report(first, 0, [4.0, 2.0], k=1, steps=2)
    _report(first, 1, [1.0, 1.0], k=1, steps=2)
    saved = first.get_state()  # as committed after epoch 2
    first.on_epoch_begin(2)
    first.on_train_batch_end(1, {"loss": 9.0})  # epoch 3 is interrupted before its end
    resumed = callbacks.LossEveryN(2)
    resumed.set_state(saved)
    _report(resumed, 2, [5.0, 5.0], k=1, steps=2)
    assert resumed.points == [(2, 3.0, 1), (4, 1.0, 2), (6, pytest.approx(5.0), 3)]


def test_nan_guard_names_the_epoch_and_the_chunk():
    class Model:
        stop_training = False

    guard = callbacks.NaNGuard()
    guard.set_model(Model())
    _report(guard, 0, [1.0] * 8, k=4, steps=8)
    assert guard.diverged_at is None
    _report(guard, 1, [1.0] * 5 + [np.nan] * 3, k=4, steps=8)
    assert guard.diverged_at == (1, 5, 8) and guard.model.stop_training
    assert guard.describe() == "epoch 2, steps 5-8 of the epoch"


def test_throughput_counts_the_epochs_examples_over_its_training_time():
    callback = callbacks.Throughput(examples_per_epoch=1000)
    logs = _report(callback, 0, [1.0] * 4, k=1, steps=4)
    assert logs["images_per_second"] > 0 and logs["epoch_seconds"] > 0
    assert logs["images_per_second"] * (callback._end - callback._start) == pytest.approx(1000)


def test_epoch_summaries_sort_logs_into_runs(tmp_path):
    writers = events.SummaryWriters(str(tmp_path))
    summaries = callbacks.EpochSummaries(writers)
    summaries.set_params({"steps": 10, "epochs": 2})
    summaries.on_epoch_begin(1)
    summaries.on_epoch_end(1, {"loss": 1.5, "val_loss": 2.5, "test_accuracy": 0.5})
    writers.close()
    assert events.read_scalars(str(tmp_path / "train"), "epoch_") == {"loss": [(20, 1.5)]}
    assert events.read_scalars(str(tmp_path / "validation"), "epoch_") == {"loss": [(20, 2.5)]}
    assert events.read_scalars(str(tmp_path / "test"), "epoch_") == {"accuracy": [(20, 0.5)]}
