"""Training: `run(config) -> metrics`, everything a run writes under `config.workdir`.

    workdir/
      config.json          the resolved configuration
      tensorboard/         train/ and validation/ scalars (per epoch, loss every N steps,
                           learning rate), bn_diagnostics/ (see bn_keras.diagnostics)
      backup/              BackupAndRestore state while a run is unfinished
      checkpoints/best.keras  the model with the best validation accuracy
      metrics.csv          one row per completed epoch
      final_metrics.json   test metrics and throughput, written last

A run killed mid-way and started again with the same workdir continues from
its last completed epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bn_keras import data, diagnostics, distribute, models

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine", "warmup_cosine")
DATASETS = ("cifar10", "synthetic")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run. `batch_size` is per replica."""

    model: str = "lenet"
    bn: str = "custom"
    bn_momentum: float = 0.99
    bn_placement: str = "before_relu"
    virtual_batch_size: int | None = None
    renorm: bool = False
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = True
    synthetic_examples: int = 1024
    train_examples: int | None = None  # the first N of the training split (quick studies)
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    sgd_momentum: float = 0.9
    lr_schedule: str = "constant"
    warmup_epochs: int = 1
    augment: bool = False
    strategy: str = "auto"
    tpu: str | None = None
    mixed_precision: str = "float32"
    workdir: str = "runs/lenet_custom"
    seed: int = 0
    deterministic: bool = True
    steps_per_execution: int = 1
    log_every_n_steps: int = 100
    diagnostics_every_n_steps: int | None = None
    probe_size: int = 256
    verbose: int = 2

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        choices = {"model": tuple(models.MODEL_BUILDERS), "bn": models.BN_CHOICES,
                   "bn_placement": models.PLACEMENTS, "dataset": DATASETS,
                   "optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES,
                   "strategy": distribute.STRATEGIES, "mixed_precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of "
                                 f"{', '.join(allowed)}.")
        for name in ("epochs", "batch_size", "steps_per_execution", "synthetic_examples",
                     "probe_size", "log_every_n_steps", "train_examples"):
            if getattr(self, name) is None:
                continue
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if not 0 <= self.bn_momentum < 1:
            raise ValueError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}.")
        if self.model == "conv1d_example" and self.dataset != "synthetic":
            raise ValueError("model='conv1d_example' trains on dataset='synthetic' sequences only.")
        if self.model == "conv1d_example" and self.bn == "none":
            raise ValueError("model='conv1d_example' is the tutorial's BN example; pick bn=keras "
                             "or bn=custom.")


def steps_done(params: dict | None, batch: int) -> int:
    """Training steps finished in the epoch when Keras reports the end of `batch`.

    With `steps_per_execution` k Keras reports each chunk of k steps by its last index,
    begin + k - 1, even for an epoch's shorter final chunk; the epoch's length caps it.
    """
    total = (params or {}).get("steps")
    return min(batch + 1, total) if total else batch + 1


class _Throughput(keras.callbacks.Callback):
    """Training images per second of each epoch (wall time, input pipeline included)."""

    def __init__(self, global_batch: int):
        super().__init__()
        self.global_batch = global_batch
        self.images_per_second: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps = steps_done(self.params, batch)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self.images_per_second.append(self._steps * self.global_batch / seconds)
        if logs is not None:
            logs["images_per_second"] = self.images_per_second[-1]


class _NaNGuard(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that remembers where the loss diverged."""

    def __init__(self):
        super().__init__()
        self.diverged_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)) and self.diverged_at is None:
            self.diverged_at = (self._epoch, steps_done(self.params, batch) - 1)
        super().on_batch_end(batch, logs)


def set_seed(seed: int, deterministic: bool) -> None:
    """Seeds Python, NumPy and TensorFlow; optionally makes TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_datasets(config: TrainConfig, global_batch: int, drop_remainder: bool) -> dict:
    """Train/validation/test pipelines of global batches, a function of `config` alone.

    tf.data combines each op seed (the shuffle's `config.seed`) with TensorFlow's global
    seed, so the global seed is set here first: otherwise a pipeline built after another
    run would shuffle by that run's seed, and a resumed study would not reproduce.
    """
    set_seed(config.seed, config.deterministic)
    if config.dataset == "synthetic":
        return data.synthetic_pipelines(
            global_batch, num_train=config.synthetic_examples,
            num_eval=max(global_batch, config.synthetic_examples // 4), seed=config.seed,
            drop_remainder=drop_remainder, augment=config.augment,
            sequences=config.model == "conv1d_example")
    return data.cifar10_pipelines(global_batch, config.data_dir, augment=config.augment,
                                  seed=config.seed, drop_remainder=drop_remainder,
                                  download=config.download, train_examples=config.train_examples)


def build_model(config: TrainConfig, num_replicas: int) -> keras.Model:
    bn_options: dict[str, Any] = {}
    if config.bn != "none":
        bn_options = {"momentum": config.bn_momentum, "synchronized": num_replicas > 1}
        if config.renorm:
            bn_options["renorm"] = True
        if config.virtual_batch_size:
            if config.bn != "custom":
                raise ValueError("virtual_batch_size (Ghost BN) needs bn='custom': Keras 3's "
                                 "BatchNormalization has no such argument.")
            bn_options["virtual_batch_size"] = config.virtual_batch_size
    kwargs: dict[str, Any] = dict(bn_options)
    if config.model == "conv1d_example":
        kwargs["num_classes"] = data.NUM_CLASSES
    else:
        kwargs["placement"] = config.bn_placement
    return models.build_model(config.model, config.bn, **kwargs)


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """A float, or a keras LearningRateSchedule over the whole run."""
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "constant":
        return config.learning_rate
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, total)
    warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(total - warmup, 1), warmup_target=config.learning_rate, warmup_steps=warmup)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr = learning_rate(config, steps_per_epoch)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.SGD(lr, momentum=config.sgd_momentum)


def _steps(dataset: tf.data.Dataset) -> int:
    steps = int(dataset.cardinality())
    if steps < 0:
        raise ValueError("the training dataset must have a known, finite number of batches.")
    return steps


def _probe_batch(dataset: tf.data.Dataset, size: int):
    """A fixed batch of up to `size` examples for the diagnostics."""
    return next(iter(dataset.unbatch().batch(size)))


def _prepare_workdir(config: TrainConfig, workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(os.path.join(workdir, "final_metrics.json")):
        raise FileExistsError(f"workdir {workdir!r} already holds a finished run; "
                              "choose another --workdir.")
    config_path = os.path.join(workdir, "config.json")
    resolved = dataclasses.asdict(config)
    if os.path.exists(config_path):
        with open(config_path) as f:
            previous = json.load(f)
        changed = sorted(k for k in resolved if k not in ("verbose",)
                         and previous.get(k) != resolved[k])
        if changed:
            raise ValueError(f"workdir {workdir!r} holds an unfinished run with other settings "
                             f"({', '.join(changed)}); resume it with the same flags or choose "
                             "another --workdir.")
    _write_json(config_path, resolved)


def _write_json(path: str, value: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def run(config: TrainConfig, datasets_override: dict[str, tf.data.Dataset] | None = None,
        strategy_override: tf.distribute.Strategy | None = None,
        extra_callbacks: list[keras.callbacks.Callback] | None = None) -> dict[str, Any]:
    """Trains and evaluates one model; returns the final metrics.

    `datasets_override` (train/validation/test pipelines of global batches) and
    `strategy_override` let tests and other programs supply their own.
    """
    config.validate()
    # Multi-worker collectives must be configured before TensorFlow runs any op.
    strategy = strategy_override or distribute.get_strategy(config.strategy, tpu=config.tpu)
    set_seed(config.seed, config.deterministic)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.mixed_precision)
    try:
        return _run(config, datasets_override, strategy, extra_callbacks or [])
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _run(config, datasets_override, strategy, extra_callbacks):
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    # Every replica must get a full batch under TPUs and multi-worker training.
    drop_remainder = config.strategy in ("tpu", "multi_worker_mirrored") or replicas > 1
    datasets = datasets_override or make_datasets(config, global_batch, drop_remainder)
    # Only the chief writes to the workdir; other workers write to a scratch directory
    # of their own, stable across restarts so their BackupAndRestore state survives.
    workdir = (config.workdir if distribute.is_chief(strategy)
               else distribute.worker_scratch_dir(config.workdir, strategy))
    _prepare_workdir(config, workdir)

    steps_per_epoch = _steps(datasets["train"])
    log.info("model=%s bn=%s strategy=%s replicas=%d global_batch=%d steps/epoch=%d workdir=%s",
             config.model, config.bn, config.strategy, replicas, global_batch, steps_per_epoch,
             workdir)
    with strategy.scope():
        model = build_model(config, replicas)
        model.compile(
            optimizer=make_optimizer(config, steps_per_epoch),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            steps_per_execution=config.steps_per_execution,
            jit_compile=False,  # XLA made LeNet slower on this CPU (NOTES.md)
        )
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and replicas > 1:
        distribute.work_around_keras_multi_worker(model)

    throughput = _Throughput(global_batch)
    nan_guard = _NaNGuard()
    probe_x, probe_y = _probe_batch(datasets["validation"], config.probe_size)
    tb_dir = os.path.join(workdir, "tensorboard")
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup")),
        throughput,
        nan_guard,
        keras.callbacks.ModelCheckpoint(os.path.join(workdir, "checkpoints", "best.keras"),
                                        monitor="val_accuracy", mode="max", save_best_only=True),
        keras.callbacks.TensorBoard(tb_dir, update_freq=config.log_every_n_steps,
                                    write_graph=False),
        diagnostics.BNDiagnostics(tb_dir, probe_x, probe_y, config.diagnostics_every_n_steps),
        keras.callbacks.CSVLogger(os.path.join(workdir, "metrics.csv"), append=True),
        *extra_callbacks,
    ]
    start = time.perf_counter()
    history = model.fit(datasets["train"], validation_data=datasets["validation"],
                        epochs=config.epochs, callbacks=callbacks, verbose=config.verbose,
                        shuffle=False)  # the pipeline shuffles, seeded
    train_seconds = time.perf_counter() - start
    test_loss, test_accuracy = model.evaluate(datasets["test"], verbose=0)
    val_history = history.history.get("val_accuracy", [])
    metrics = {
        "test_loss": float(test_loss),
        "test_accuracy": float(test_accuracy),
        "final_val_accuracy": float(val_history[-1]) if val_history else None,
        "best_val_accuracy": float(max(val_history)) if val_history else None,
        "epochs_run_this_session": len(history.epoch),
        "train_seconds_this_session": train_seconds,
        "train_images_per_second": (float(np.median(throughput.images_per_second))
                                    if throughput.images_per_second else None),
        "diverged": nan_guard.diverged_at is not None,
        "diverged_at_epoch": None if nan_guard.diverged_at is None else nan_guard.diverged_at[0],
        "replicas": replicas,
        "global_batch_size": global_batch,
        "num_params": int(model.count_params()),
    }
    if nan_guard.diverged_at is not None:
        log.warning("training diverged: the loss became NaN/inf in epoch %d, batch %d "
                    "(try a lower learning rate, or BN)", *nan_guard.diverged_at)
    _write_json(os.path.join(workdir, "final_metrics.json"), metrics)
    model.save(os.path.join(workdir, "final.keras"))
    return metrics
