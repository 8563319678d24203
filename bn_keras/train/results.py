"""What a training run returns and keeps: `RunResult`, written as final_metrics.json.

`run(config)` (bn_keras.train.training) returns a RunResult; the work directory keeps it
as final_metrics.json (`to_json`), and `from_json` reads that back, files of earlier
versions included (a field they lack takes its default). The per-epoch `history` rows
are the epoch's logs as Keras names them (`loss`, `val_accuracy`, `learning_rate`, ...,
and whatever a caller's callbacks add), keyed by metric name as Keras' own History.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

# One epoch's logs: {"epoch": 1-based, "step": global step, metric name: value, ...}.
EpochLogs = dict[str, Any]


class LossPoint(NamedTuple):
    """The mean training loss of one window of steps (the tutorial's printed loss)."""

    step: int  # the global step at the window's end
    loss: float
    epoch: int  # 1-based


class TestScore(NamedTuple):
    """Loss and accuracy on the test split."""

    test_loss: float
    test_accuracy: float


class Recalibrated(NamedTuple):
    """How BN's statistics were re-estimated for the kept weights."""

    batches: int
    examples: int


@dataclasses.dataclass
class RunResult:
    """A finished (or diverged) training run: its final test, its per-epoch history and
    how it was carried out."""

    test_loss: float
    test_accuracy: float
    epochs: int
    history: list[EpochLogs]
    loss_curve: list[LossPoint]
    final_val_accuracy: float | None = None
    best_val_accuracy: float | None = None
    epochs_run_this_session: int = 0
    train_seconds_this_session: float = 0.0
    # Steady state: the median of the epochs after the first (which also traces).
    train_images_per_second: float | None = None
    diverged: bool = False
    diverged_at_epoch: int | None = None  # 0-based
    replicas: int = 1
    global_batch_size: int | None = None
    # The threads TensorFlow ran with (0: its default): numbers depend on them.
    tensorflow_threads: int | None = None
    num_params: int | None = None
    measured_on: str | None = None  # CPU, cores, versions, date
    # Several workers: whether they all ended with the same weights (they must).
    workers_agree: bool | None = None
    # What the final model, its test and checkpoints hold: the "trained" weights or
    # their EMA ("averaged"), BN's "moving" statistics or "re-estimated" ones (None: no
    # BN), and the test with each variant (bn_keras.train.averaging.VARIANTS).
    evaluated_weights: str = "trained"
    bn_statistics: str | None = "moving"
    recalibration: Recalibrated | None = None
    test_variants: dict[str, TestScore] | None = None

    @property
    def test_accuracy_per_epoch(self) -> list[float]:
        """The test accuracy after each epoch, where the run measured it."""
        return [row["test_accuracy"] for row in self.history if "test_accuracy" in row]

    def to_json(self) -> dict[str, Any]:
        """The JSON object of final_metrics.json (named tuples as objects)."""
        value = dataclasses.asdict(self)
        value["loss_curve"] = [list(point) for point in self.loss_curve]
        if self.recalibration is not None:
            value["recalibration"] = self.recalibration._asdict()
        if self.test_variants is not None:
            value["test_variants"] = {k: v._asdict() for k, v in self.test_variants.items()}
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RunResult:
        """A RunResult from final_metrics.json, of this or an earlier version: keys it does
        not know are dropped, missing ones take their defaults. Raises KeyError or
        TypeError (for the caller to report as a damaged file) when it is not one."""
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in value.items() if k in known}
        fields["loss_curve"] = [LossPoint(*point) for point in fields.get("loss_curve") or []]
        if fields.get("recalibration") is not None:
            fields["recalibration"] = Recalibrated(**fields["recalibration"])
        if fields.get("test_variants") is not None:
            fields["test_variants"] = {k: TestScore(**v)
                                       for k, v in fields["test_variants"].items()}
        return cls(**fields)
