"""The BN doctor (bn_keras.doctor) on a trained model: a training run's final model, or a
.keras file, with its data preprocessed as in training.

    workdir/bn_doctor.json     the run's checkup: diagnosis, data used, seconds

A run's work directory says everything the doctor needs: final.keras (compiled, so its
optimizer's iterations count the statistics' updates), and config.json: how the data
was preprocessed, the batch size per replica; final_metrics.json the replicas. For a
bare .keras file the caller says how its data is preprocessed (`PREPROCESSING`), or the
data checks are skipped: data preprocessed otherwise than in training would make
statistics look stale that are not.

The data: statistics re-estimated from the first training images (unaugmented, in
batches of the training batch size), measured on the first validation images
(`train[45000:]`, never trained on), each capped (`calibration_examples`,
`evaluation_examples`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import numpy as np
import tensorflow as tf

from bn_keras import atomic, saving
from bn_keras.data import pipelines, sources
from bn_keras.doctor.diagnosis import diagnose_batch_norm, repair_batch_norm
from bn_keras.doctor.findings import Diagnosis, Repair, Score
from bn_keras.errors import InvalidSetting, NotFound
from bn_keras.train.config import TrainConfig
from bn_keras.train.workdir import Workdir

DOCTOR_FILE = "bn_doctor.json"
# How the images reach the model: standardized with CIFAR-10's per-channel statistics
# (bn_keras.data.pipelines.normalize_images, what every run here trains on), or the
# pixels as they are (0..255, as float32: a model that rescales them itself).
PREPROCESSING = ("cifar_normalized", "none")
DATASETS = ("cifar10", "synthetic")
# The command's defaults: re-estimate from 12,800 training images (the 100 batches of 128
# a run re-estimates with, bn_keras.train.config.RECALIBRATION_BATCHES; fvcore's precise
# BN takes 200), measure on all 5,000 validation images.
CALIBRATION_EXAMPLES = 12_800
EVALUATION_EXAMPLES = 5000
# At the end of a training run (experiments/train.py), capped for time: 2,560 training and
# 2,500 validation images, a few seconds for LeNet.
RUN_CALIBRATION_EXAMPLES = 2560
RUN_EVALUATION_EXAMPLES = 2500
EVALUATION_BATCH = 500


@dataclasses.dataclass(frozen=True)
class DoctorData:
    """Labelled batches for the data checks: `calibration` (training images, in batches of
    the training batch size) and `evaluation` (validation images), and what they are."""

    calibration: Any
    evaluation: Any
    calibration_batches: int
    evaluation_batches: int
    description: str


@dataclasses.dataclass(frozen=True)
class Checkup:
    """The doctor on one model file: its diagnosis, and with a repair, what the repair
    did and the diagnosis of the repaired model (`after`)."""

    source: str
    data: str | None
    diagnosis: Diagnosis
    seconds: float
    repair: Repair | None = None
    after: Diagnosis | None = None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "data": self.data, "seconds": self.seconds,
                "diagnosis": self.diagnosis.to_json(),
                "repair": self.repair and self.repair.to_json(),
                "after": self.after and self.after.to_json()}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Checkup:
        repair = value.get("repair")
        if repair is not None:
            repair = Repair(**{**repair, "before": Score(**repair["before"]),
                               "after": Score(**repair["after"])})
        after = value.get("after")
        return cls(value["source"], value.get("data"), Diagnosis.from_json(value["diagnosis"]),
                   value.get("seconds", 0.0), repair,
                   None if after is None else Diagnosis.from_json(after))


def images_data(dataset: str, data_dir: str | None, preprocessing: str, batch_size: int,
                calibration_examples: int = CALIBRATION_EXAMPLES,
                evaluation_examples: int = EVALUATION_EXAMPLES, seed: int = 0) -> DoctorData:
    """CIFAR-10 (or synthetic) images for the data checks, preprocessed as `preprocessing`
    says (PREPROCESSING): the first `calibration_examples` training images in batches of
    `batch_size`, the first `evaluation_examples` validation images."""
    if preprocessing not in PREPROCESSING:
        raise InvalidSetting(f"preprocessing={preprocessing!r} is not one of "
                             f"{', '.join(PREPROCESSING)}.")
    if dataset not in DATASETS:
        raise InvalidSetting(f"dataset={dataset!r} is not one of {', '.join(DATASETS)}.")
    if dataset == "synthetic":
        train = sources.synthetic_images(calibration_examples, seed=seed)
        validation = sources.synthetic_images(evaluation_examples, seed=seed + 1)
    else:
        train = _first_cifar10("train", calibration_examples, data_dir)
        validation = _first_cifar10("validation", evaluation_examples, data_dir)
    preprocess = (pipelines.normalize_images if preprocessing == "cifar_normalized"
                  else lambda images: tf.cast(images, tf.float32))
    return _data(train, validation, batch_size, preprocess,
                 f"{dataset}, {preprocessing}")


def run_data(config: TrainConfig, calibration_examples: int = CALIBRATION_EXAMPLES,
             evaluation_examples: int = EVALUATION_EXAMPLES,
             data_dir: str | None = None) -> DoctorData:
    """The data of the run `config` describes, preprocessed as it was in training."""
    if config.dataset == "synthetic":
        from bn_keras.train.training import load_splits

        splits = load_splits(config)
        train = splits["train"].take(calibration_examples)
        validation = splits["validation"].take(evaluation_examples)
    else:
        directory = data_dir or config.data_dir
        limit = min(calibration_examples, config.training_examples)
        train = _first_cifar10("train", limit, directory)
        validation = _first_cifar10("validation", evaluation_examples, directory)
    sequences = config.model == "conv1d_example"
    return _data(train, validation, config.batch_size,
                 None if sequences else pipelines.normalize_images,
                 f"{config.dataset}, " + ("sequences" if sequences else "cifar_normalized"))


def _first_cifar10(split: str, count: int, data_dir: str | None) -> sources.Examples:
    """The first `count` examples of a CIFAR-10 split (reading no more of it)."""
    dataset = sources.load_cifar10(split, data_dir, download=False).take(count)
    images, labels = dataset.batch(count).get_single_element()
    return sources.Examples(images.numpy(), labels.numpy().astype(np.int64))


def _data(train: sources.Examples, validation: sources.Examples, batch_size: int,
          preprocess, description: str) -> DoctorData:
    calibration = pipelines.evaluation_pipeline(train, batch_size, preprocess)
    evaluation = pipelines.evaluation_pipeline(validation, EVALUATION_BATCH, preprocess)
    return DoctorData(calibration, evaluation, math.ceil(len(train) / batch_size),
                      math.ceil(len(validation) / EVALUATION_BATCH),
                      f"{description}: statistics re-estimated from {len(train):,} training "
                      f"images (batches of {batch_size}), measured on {len(validation):,} "
                      "validation images")


def examine(model_path: str, data: DoctorData | None = None, batch_size: int | None = None,
            replicas: int = 1, fix: bool = False) -> tuple[Checkup, Any]:
    """The doctor on the .keras file `model_path`, with `data` for the data checks; with
    `fix`, the model repaired (re-estimated statistics, where they score better) and
    diagnosed again. Returns the Checkup and the model (repaired with `fix`)."""
    start = time.perf_counter()
    model = saving.load_model(model_path)
    arguments = dict(batch_size=batch_size, replicas=replicas)
    if data is not None:
        arguments.update(calibration_data=data.calibration,
                         max_batches=max(data.calibration_batches, data.evaluation_batches))
    diagnosis = diagnose_batch_norm(model, None if data is None else data.evaluation,
                                    **arguments)
    repair = after = None
    if fix:
        if data is None:
            raise InvalidSetting("fix needs data to re-estimate the statistics from and to "
                                 "measure on: give `data_dir` (and how the data is "
                                 "preprocessed).")
        repair = repair_batch_norm(model, data.evaluation, data.calibration,
                                   max_batches=arguments["max_batches"], batch_size=batch_size)
        after = diagnose_batch_norm(model, data.evaluation, **arguments)
    checkup = Checkup(model_path, None if data is None else data.description, diagnosis,
                      time.perf_counter() - start, repair, after)
    return checkup, model


def run_inputs(workdir: str) -> tuple[str, TrainConfig, int]:
    """A finished run's final model path, configuration and replicas."""
    w = Workdir(workdir)
    return _run_inputs(w, w.read_config())


def _run_inputs(w: Workdir, config: dict[str, Any] | None) -> tuple[str, TrainConfig, int]:
    """`run_inputs` from the workdir's recorded configuration, already read."""
    if config is None or not os.path.isfile(w.final_model):
        raise NotFound(f"{w.path!r} holds no finished training run (config.json and "
                       "final.keras): is it a training work directory, and has its run "
                       "finished?")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    final = w.read_final()
    return (w.final_model, TrainConfig(**{k: v for k, v in config.items() if k in known}),
            final.replicas if final else 1)


def write_run_checkup(workdir: str, calibration_examples: int = RUN_CALIBRATION_EXAMPLES,
                      evaluation_examples: int = RUN_EVALUATION_EXAMPLES) -> Checkup | None:
    """The doctor on a finished run's final model (a copy, loaded from final.keras: the
    run's files stay as they are), with its data capped; written as workdir/bn_doctor.json.
    None in a non-chief worker of a multi-worker run (the chief writes the workdir)."""
    w = Workdir(workdir)
    recorded = w.read_config()
    if not _chief_process((recorded or {}).get("strategy")):
        return None  # before looking for final.keras: the chief may still be writing it
    model_path, config, replicas = _run_inputs(w, recorded)
    data = run_data(config, calibration_examples, evaluation_examples)
    checkup, _ = examine(model_path, data, config.batch_size, replicas)
    atomic.write_json(os.path.join(workdir, DOCTOR_FILE), checkup.to_json())
    return checkup


def _chief_process(strategy: str | None) -> bool:
    """False in a non-chief worker of a multi-worker run (by $TF_CONFIG, as
    bn_keras.train.distribute.is_chief decides)."""
    if strategy != "multi_worker_mirrored":
        return True
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = tf_config.get("task", {})
    kind, index = task.get("type"), task.get("index", 0)
    return kind in (None, "chief") or (kind == "worker" and index == 0
                                       and "chief" not in tf_config.get("cluster", {}))


def read_run_checkup(workdir: str) -> Checkup | None:
    """workdir/bn_doctor.json, if the run has one."""
    value = atomic.read_json(os.path.join(workdir, DOCTOR_FILE), kind=dict)
    return None if value is None else Checkup.from_json(value)
