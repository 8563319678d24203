"""Hyperparameter search with keras-tuner over BN on/off, BN momentum, learning rate,
batch size and optimizer, tuned on the validation split; the best configuration is
retrained with bn_keras.train.run and evaluated on the test split.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any, NamedTuple

import keras
import keras_tuner

from bn_keras.errors import DamagedFile, InvalidSetting
from bn_keras.train import training
from bn_keras.train.config import TrainConfig
from bn_keras.train.results import RunResult

TUNERS = ("hyperband", "bayesian", "random")


class BNHyperModel(keras_tuner.HyperModel):
    """The search space; `fit` builds the pipelines for the trial's batch size from the
    examples `load_data` read once (before the search, so missing data is one line)."""

    def __init__(self, base: TrainConfig):
        super().__init__(name=f"{base.model}_bn_search")
        self.base = base
        self.splits = None

    def load_data(self) -> None:
        self.splits = training.load_splits(self.base)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        # One step per call: the trial's epochs are concatenated into one dataset (`fit`).
        return training.build_compiled_model(self.trial_config(hp), num_replicas=1,
                                             steps_per_epoch=1, steps_per_execution=1)

    def trial_config(self, hp: keras_tuner.HyperParameters) -> TrainConfig:
        bn = hp.Choice("bn", ["none", "custom"])
        return dataclasses.replace(
            self.base, bn=bn,
            bn_momentum=(hp.Choice("bn_momentum", [0.9, 0.99], parent_name="bn",
                                   parent_values=["custom"])
                         if bn != "none" else self.base.bn_momentum),
            learning_rate=hp.Float("learning_rate", 1e-4, 1e-1, sampling="log"),
            optimizer=hp.Choice("optimizer", ["adam", "sgd"]),
            batch_size=hp.Choice("batch_size", [32, 64, 128, 256]),
            lr_schedule="constant")

    def fit(self, hp, model, *args, **kwargs):
        if self.splits is None:
            self.load_data()
        datasets = training.make_datasets(self.trial_config(hp), splits=self.splits)
        stream = datasets.train
        kwargs.pop("validation_data", None)
        # Each epoch's batches are a function of (seed, epoch), as in training.run.
        first, stop = kwargs.get("initial_epoch", 0), kwargs.get("epochs", 1)
        return model.fit(stream.epochs(first, stop), steps_per_epoch=stream.steps_per_epoch,
                         validation_data=datasets.validation, shuffle=False, **kwargs)


def make_tuner(kind: str, base: TrainConfig, directory: str, max_trials: int,
               max_epochs: int, seed: int = 0, overwrite: bool = False) -> keras_tuner.Tuner:
    """The search over `base`'s data, which is read first: missing data is one error here,
    not a traceback per trial inside keras-tuner."""
    if kind not in TUNERS:
        raise InvalidSetting(f"Unknown tuner={kind!r}; expected one of {', '.join(TUNERS)}.")
    hypermodel = BNHyperModel(base)
    hypermodel.load_data()
    common = dict(hypermodel=hypermodel, objective="val_accuracy", seed=seed,
                  directory=directory, project_name=f"{kind}_search", overwrite=overwrite)
    try:  # a search already in `directory` is reloaded (oracle.json, trial.json files)
        if kind == "hyperband":
            return keras_tuner.Hyperband(max_epochs=max_epochs, factor=3, **common)
        if kind == "bayesian":
            return keras_tuner.BayesianOptimization(max_trials=max_trials, **common)
        return keras_tuner.RandomSearch(max_trials=max_trials, **common)
    except (ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DamagedFile(os.path.join(directory, f"{kind}_search"),
                          f"keras-tuner cannot reload the search kept there: {reason}",
                          "move it aside to start the search afresh, or choose another "
                          "`workdir`") from None


def search(tuner: keras_tuner.Tuner, epochs: int, logdir: str) -> list[dict[str, Any]]:
    """Runs the search (TensorBoard callback: HParams per trial); returns trials, best first."""
    with warnings.catch_warnings():
        # Hyperband continues a trial by loading the previous round's checkpoint into a
        # freshly compiled model (keras_tuner Hyperband._build_hypermodel); that model's
        # optimizer has no slots yet, so Keras warns once per continued trial that it skips
        # the saved ones: the optimizer restarts, as keras-tuner intends. Nothing to act on.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer",
                                category=UserWarning)
        tuner.search(epochs=epochs, callbacks=[keras.callbacks.TensorBoard(logdir)], verbose=0)
    rows = []
    for trial in tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials)):
        rows.append({"trial": trial.trial_id, "val_accuracy": trial.score,
                     **trial.hyperparameters.values})
    return rows


class Retrained(NamedTuple):
    """The best configuration of a search, trained from scratch: its hyperparameters and
    its run's result (test accuracy on the test split)."""

    hyperparameters: dict[str, Any]
    result: RunResult


def retrain_best(tuner: keras_tuner.Tuner, workdir: str, epochs: int) -> Retrained:
    """Trains the best configuration from scratch and evaluates it on the test split."""
    best_hp = tuner.get_best_hyperparameters(1)[0]
    config = dataclasses.replace(tuner.hypermodel.trial_config(best_hp), epochs=epochs,
                                 workdir=os.path.join(workdir, "best_retrained"))
    return Retrained(best_hp.values, training.run(config))
