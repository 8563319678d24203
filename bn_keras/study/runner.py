"""The BN study's runs: arms x seeds of training runs, each cached, with its HParams entry.

An `Arm` is a named set of TrainConfig overrides (no BN, Keras' BN, ours, ...).
`run_study` trains every arm with every seed through `bn_keras.train.run`,
recording the mean training loss every N mini-batches and the test accuracy
after every epoch, and writes one JSON per finished run, so an interrupted
study resumes where it stopped. bn_keras.study.statistics summarizes the
results, bn_keras.study.plots draws them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from bn_keras import atomic
from bn_keras.errors import InvalidSetting
from bn_keras.train import distribute, training
from bn_keras.train.config import RESUMABLE_FIELDS, TrainConfig, differences
from bn_keras.train.results import RunResult
from bn_keras.train.workdir import Workdir

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StudyRun:
    """One finished run of a study: its arm and seed, its settings, and its RunResult.
    Kept as the run's study_result.json: the RunResult's fields, flat, beside the rest."""

    arm: str
    seed: int
    overrides: dict[str, Any]
    config: dict[str, Any]
    result: RunResult
    wall_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"arm": self.arm, "seed": self.seed, "overrides": self.overrides,
                "config": self.config, **self.result.to_json(),
                "wall_seconds": self.wall_seconds,
                "test_accuracy_per_epoch": self.result.test_accuracy_per_epoch}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> StudyRun:
        return cls(value["arm"], value["seed"], value["overrides"], value.get("config") or {},
                   RunResult.from_json(value), value["wall_seconds"])


@dataclasses.dataclass(frozen=True, init=False)
class Arm:
    """One configuration of the study: a name and the TrainConfig fields it changes,
    e.g. `Arm("no_bn", bn="none")`."""

    name: str
    overrides: tuple[tuple[str, Any], ...]

    def __init__(self, name: str, **overrides: Any):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "overrides", tuple(sorted(overrides.items())))

    def config(self, base: TrainConfig, seed: int, workdir: str) -> TrainConfig:
        return dataclasses.replace(base, **dict(self.overrides), seed=seed, workdir=workdir)


def run_dir(study_dir: str, arm_name: str, seed: int, *parts: str) -> str:
    """The work directory of one run of a study (or a path inside it)."""
    return os.path.join(study_dir, f"{arm_name}_seed{seed}", *parts)


def run_study(arms: Sequence[Arm], seeds: Sequence[int], base: TrainConfig,
              study_dir: str, loss_every: int = 500) -> list[StudyRun]:
    """Trains every arm with every seed; returns one StudyRun per run (cached on disk).

    Each run records the mean training loss of every `loss_every` steps and the test
    accuracy after every epoch. A run's `study_result.json`, written last and
    atomically, marks it done: rerunning a study skips finished runs, and the run that
    was interrupted continues from its last completed epoch.
    """
    base = dataclasses.replace(base, log_every_n_steps=loss_every, test_every_epoch=True)
    # One thread setting for the whole study (a process sets it once): the base's.
    distribute.use_threads(base.resolved_threads())
    results = []
    splits = _SplitsOnce()
    runs = [(arm, seed) for arm in arms for seed in seeds]
    for i, (arm, seed) in enumerate(runs, start=1):
        workdir = run_dir(study_dir, arm.name, seed)
        result_path = os.path.join(workdir, "study_result.json")
        config = arm.config(base, seed, workdir)
        cached = atomic.read_json(result_path)
        if cached is not None:
            cached = StudyRun.from_json(cached)
            changed = set(differences(cached.config, config)) - set(RESUMABLE_FIELDS)
            if changed:
                raise InvalidSetting(f"{workdir} holds a result of other settings "
                                     f"({', '.join(sorted(changed))}); remove it or choose "
                                     "another directory for the study's runs.")
            results.append(cached)
            log.info("[%d/%d] %s seed %d: done earlier", i, len(runs), arm.name, seed)
            continue
        log.info("[%d/%d] %s seed %d", i, len(runs), arm.name, seed)
        start = time.perf_counter()
        # Killed after training but before the result was written: the run is complete.
        finished = Workdir(workdir).read_final()
        recorded = Workdir(workdir).read_config() or {}
        if finished is not None and set(differences(recorded, config)) - set(RESUMABLE_FIELDS):
            finished = None  # a finished run of other settings: Workdir.check refuses it
        result = finished or training.run(
            config, datasets_override=training.make_datasets(config, splits=splits(config)))
        run = StudyRun(arm.name, seed, dict(arm.overrides), dataclasses.asdict(config), result,
                       time.perf_counter() - start)
        write_hparams(os.path.join(workdir, "tensorboard", "hparams"), arm, config, result)
        atomic.write_json(result_path, run.to_json(), indent=1)
        results.append(run)
    return results


class _SplitsOnce:
    """The examples of a study's runs, read once: they differ only in what each run's
    settings make of them (CIFAR-10 is read from disk in seconds; a study has dozens of
    runs)."""

    def __init__(self):
        self._loaded: dict = {}

    def __call__(self, config: TrainConfig):
        key = ((config.data_dir, config.download, config.train_examples)
               if config.dataset == "cifar10" else  # synthetic: sized by the batch too
               (config.synthetic_examples, config.batch_size, config.model, config.seed))
        if key not in self._loaded:
            self._loaded = {key: training.load_splits(config)}  # one set held at a time
        return self._loaded[key]


def write_hparams(logdir: str, arm: Arm, config: TrainConfig, result: RunResult) -> None:
    """One HParams-dashboard entry: the run's settings and its final metrics."""
    from tensorboard.plugins.hparams import api as hp

    hparams = {"arm": arm.name, "bn": config.bn, "model": config.model,
               "optimizer": config.optimizer, "learning_rate": config.learning_rate,
               "batch_size": config.batch_size, "bn_momentum": config.bn_momentum,
               "bn_placement": config.bn_placement, "seed": config.seed,
               "virtual_batch_size": config.virtual_batch_size or 0, "renorm": config.renorm}
    with tf.summary.create_file_writer(logdir).as_default():
        hp.hparams(hparams)
        tf.summary.scalar("test_accuracy", result.test_accuracy, step=0)
        tf.summary.scalar("test_loss", result.test_loss, step=0)
        best = max(result.test_accuracy_per_epoch or [result.test_accuracy])
        tf.summary.scalar("best_test_accuracy", best, step=0)
