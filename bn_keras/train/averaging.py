"""The weights a run evaluates, checkpoints and exports: the trained ones or their
exponential moving average (EMA), with BN statistics re-estimated for them where asked.

The averages are Keras' own (the optimizer's `use_ema`: updated inside every training
step, kept in the optimizer's state, so the epoch commit saves them and a resumed run
continues them exactly). Keras then ends every `fit` by overwriting the trained
weights with the averages; a run here calls `fit` once per epoch, so that would
restart each epoch from the averages: `keras_compat.keep_averages_apart` turns it off.

Averaging the weights does not average BN's moving statistics: those still follow the
trained weights (Keras' `SwapEMAWeights` leaves them so). `EvaluatedWeights` puts the
averages in and re-estimates the statistics for them (bn_keras.layers.recalibration),
as timm's ModelEmaV3 and PyTorch's `AveragedModel(use_buffers=True)` answer the same
problem; `SwapEvaluatedWeights` does so for each epoch's validation, test and best
checkpoint, and puts the trained weights back before the epoch is committed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras

from bn_keras import keras_compat
from bn_keras.layers import batch_norm_layers, recalibrate_batch_norm
from bn_keras.layers.recalibration import Recalibration
from bn_keras.train.results import TestScore


class EvaluatedWeights:
    """Puts a model's evaluated weights in place: the optimizer's averages (with
    `use_average`), then BN statistics re-estimated over `batches` batches of
    `data()` (with `batches` > 0)."""

    def __init__(self, model: keras.Model, use_average: bool, batches: int,
                 data: Callable[[], Any]):
        self.model, self.use_average, self.batches, self.data = model, use_average, batches, data

    @property
    def changes_anything(self) -> bool:
        return self.use_average or (self.batches > 0 and bool(batch_norm_layers(self.model)))

    def _variables(self) -> list:
        """Every variable `apply` may change: trainable weights and BN statistics."""
        variables = list(self.model.trainable_variables)
        for layer in batch_norm_layers(self.model):
            variables += layer.non_trainable_variables
        unique = {id(v): v for v in variables}
        return list(unique.values())

    def apply(self) -> Recalibration | None:
        """Puts the evaluated weights in; returns what recalibration used, if it ran."""
        if self.use_average:
            for variable, average in keras_compat.optimizer_averages(self.model.optimizer):
                variable.assign(average)
        if self.batches and batch_norm_layers(self.model):
            return recalibrate_batch_norm(self.model, self.data(), num_batches=self.batches)
        return None

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The evaluated weights inside, the model exactly as it was afterwards."""
        variables = self._variables()
        saved = [keras.ops.convert_to_numpy(v).copy() for v in variables]
        try:
            self.apply()
            yield
        finally:
            for variable, value in zip(variables, saved, strict=True):
                variable.assign(value)


class SwapEvaluatedWeights(keras.callbacks.Callback):
    """Within `fit`: the evaluated weights from the start of validation until this
    callback's turn at the epoch's end, so validation, the per-epoch test and the best
    checkpoint see them; the trained weights (and BN statistics) back before the
    callbacks after it (diagnostics, the epoch commit)."""

    def __init__(self, evaluated: EvaluatedWeights):
        super().__init__()
        self.evaluated = evaluated
        self._swap: contextlib.ExitStack | None = None

    def on_test_begin(self, logs=None):
        if self._swap is None:
            self._swap = contextlib.ExitStack()
            self._swap.enter_context(self.evaluated.swapped_in())

    def on_epoch_end(self, epoch, logs=None):
        self._put_back()

    def on_train_end(self, logs=None):
        self._put_back()  # an epoch that ended early (NaN guard) without validation

    def _put_back(self) -> None:
        if self._swap is not None:
            swap, self._swap = self._swap, None
            swap.close()


# The evaluations `evaluate_variants` may make, in words: (the weights, BN's statistics).
VARIANTS = {
    "trained_weights_moving_statistics": ("trained weights", "moving BN statistics"),
    "trained_weights_re_estimated": ("trained weights", "re-estimated BN statistics"),
    "averaged_weights_trained_statistics": ("EMA weights", "the trained weights' BN statistics"),
    "averaged_weights_re_estimated": ("EMA weights", "re-estimated BN statistics"),
}


def variant_label(name: str, with_bn: bool = True) -> str:
    """One of `VARIANTS` in words; a model without BN has weights only."""
    weights, statistics = VARIANTS[name]
    return f"{weights}, {statistics}" if with_bn else weights


def evaluate_variants(model: keras.Model, evaluated: EvaluatedWeights, test
                      ) -> dict[str, TestScore]:
    """Test loss and accuracy of the trained weights with their moving statistics and, as
    they apply, with re-estimated statistics, of the averaged weights with the trained
    weights' statistics (what Keras' use_ema gives), and with re-estimated ones."""
    variants = {}

    def measure(name: str, use_average: bool, batches: int) -> None:
        with EvaluatedWeights(model, use_average, batches, evaluated.data).swapped_in():
            loss, accuracy = model.evaluate(test, verbose=0)
        variants[name] = TestScore(float(loss), float(accuracy))

    has_bn = bool(batch_norm_layers(model))
    measure("trained_weights_moving_statistics", False, 0)
    if evaluated.batches and has_bn:
        measure("trained_weights_re_estimated", False, evaluated.batches)
    if evaluated.use_average:
        measure("averaged_weights_trained_statistics", True, 0)
        if evaluated.batches and has_bn:
            measure("averaged_weights_re_estimated", True, evaluated.batches)
    return variants
