"""Training: `run(config) -> metrics`, everything a run writes under `config.workdir`.

The recipe: check the configuration and the work directory (nothing is
written before both pass), build the data and the model, restore the last
committed epoch if there is one, then train one epoch per `model.fit` call on
that epoch's data (a function of the seed and the epoch, bn_keras.data),
committing each finished epoch (bn_keras.workdir), and evaluate on the test
split. A run stopped at any moment and started again with the same command
continues from its last completed epoch and ends with the same numbers as a
run that never stopped (with `deterministic`).
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import keras
import tensorflow as tf

from bn_keras import callbacks, data, distribute, models
from bn_keras.config import TrainConfig
from bn_keras.workdir import Workdir

log = logging.getLogger("bn_keras.training")


def set_seed(seed: int, deterministic: bool) -> None:
    """Seeds Python, NumPy and TensorFlow; optionally makes TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_datasets(config: TrainConfig, num_replicas: int = 1,
                  drop_remainder: bool = False) -> dict:
    """{"train": data.TrainingStream, "validation", "test": tf.data.Dataset} of global
    batches (`batch_size` and `eval_batch_size` examples per replica): a function of
    `config` alone."""
    global_batch = config.batch_size * num_replicas
    eval_batch = config.eval_batch_size * num_replicas
    if config.dataset == "synthetic":
        return data.synthetic_pipelines(
            global_batch, num_train=config.synthetic_examples,
            num_eval=max(global_batch, config.synthetic_examples // 4), seed=config.seed,
            drop_remainder=drop_remainder, augment=config.augment,
            sequences=config.model == "conv1d_example", eval_batch_size=eval_batch)
    return data.cifar10_pipelines(global_batch, config.data_dir, augment=config.augment,
                                  seed=config.seed, drop_remainder=drop_remainder,
                                  download=config.download, train_examples=config.train_examples,
                                  eval_batch_size=eval_batch)


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


# Weight decay applies to conv and dense kernels only: decaying BN's gamma and beta (or
# biases) toward zero fights the normalization rather than regularizing the network.
NO_WEIGHT_DECAY = ("gamma", "beta", "bias")


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr = learning_rate(config, steps_per_epoch)
    decay = config.weight_decay or None
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(lr, weight_decay=decay)
    else:
        optimizer = keras.optimizers.SGD(lr, momentum=config.sgd_momentum,
                                         nesterov=config.nesterov, weight_decay=decay)
    if decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    return optimizer


@keras.saving.register_keras_serializable(package="bn_keras", name="SmoothedSparseCrossentropy")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy from logits against integer labels smoothed by `label_smoothing`:
    the target puts 1 - eps on the label and eps spread evenly over all classes
    (Szegedy et al., 2016), as `CategoricalCrossentropy(label_smoothing=eps)` on one-hot
    labels, which Keras' sparse loss does not offer."""

    def __init__(self, label_smoothing: float = 0.0, name="smoothed_sparse_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        log_probs = keras.ops.log_softmax(keras.ops.cast(y_pred, "float32"), axis=-1)
        labels = keras.ops.expand_dims(keras.ops.cast(y_true, "int32"), -1)
        nll = -keras.ops.squeeze(keras.ops.take_along_axis(log_probs, labels, axis=-1), -1)
        uniform = -keras.ops.mean(log_probs, axis=-1)
        return (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def make_loss(config: TrainConfig) -> keras.losses.Loss:
    if config.label_smoothing:
        return SmoothedSparseCrossentropy(config.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build_compiled_model(config: TrainConfig, num_replicas: int, steps_per_epoch: int,
                         mirrored: bool = False) -> keras.Model:
    """The configured model, compiled with its optimizer, loss and accuracy metric
    (`mirrored`: under a (multi-worker) MirroredStrategy)."""
    model = models.build_model(config.model, config.bn, **config.model_options(num_replicas))
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=make_loss(config),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=config.resolved_steps_per_execution(
            num_replicas if mirrored else 1),
        jit_compile=config.jit_compile,
    )
    return model


def probe_batch(dataset: tf.data.Dataset, size: int):
    """A fixed batch of up to `size` examples for the diagnostics."""
    return next(iter(dataset.unbatch().batch(size)))


def run(config: TrainConfig, datasets_override: dict | None = None,
        strategy_override: tf.distribute.Strategy | None = None,
        extra_callbacks: list[keras.callbacks.Callback] | None = None) -> dict[str, Any]:
    """Trains and evaluates one model; returns the final metrics.

    `datasets_override` ({"train": data.TrainingStream, "validation", "test":
    tf.data.Dataset} of global batches) and `strategy_override` let tests and other
    programs supply their own.
    """
    config.validate()
    # Multi-worker collectives must be configured before TensorFlow runs any op.
    strategy = strategy_override or distribute.get_strategy(config.strategy, tpu=config.tpu)
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
    # Only the chief writes to the workdir; other workers write to a scratch directory
    # of their own, stable across restarts so their state survives too.
    mirrored = isinstance(strategy, (tf.distribute.MirroredStrategy,
                                     tf.distribute.MultiWorkerMirroredStrategy))
    config.resolved_steps_per_execution(replicas if mirrored else 1)  # refuses before writing
    workdir = Workdir(config.workdir if distribute.is_chief(strategy)
                      else distribute.worker_scratch_dir(config.workdir, strategy))
    resume = workdir.check(config)
    datasets = datasets_override or make_datasets(config, replicas, drop_remainder)
    stream = datasets["train"]
    with strategy.scope():
        set_seed(config.seed, config.deterministic)  # initial weights: a function of the seed
        model = build_compiled_model(config, replicas, stream.steps_per_epoch, mirrored)
        workdir.start(config, resume)
        if resume.epoch:
            workdir.restore(model, resume)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and replicas > 1:
        distribute.work_around_keras_multi_worker(model)
    elif replicas > 1:
        distribute.build_from_first_replica(model)
    writers = callbacks.SummaryWriters(workdir.tensorboard)
    named = callbacks.get_callbacks(
        config, workdir, writers, probe_batch(datasets["validation"], config.probe_size),
        stream.examples_per_epoch, resume,
        test_dataset=datasets["test"] if config.test_every_epoch else None,
        extra=extra_callbacks)
    if resume.epoch == 0:
        named["diagnostics"].set_model(model)
        named["diagnostics"].write(0)
    log.info("%s: model=%s bn=%s strategy=%s replicas=%d global_batch=%d steps/epoch=%d "
             "workdir=%s", f"resuming after epoch {resume.epoch}" if resume.epoch else "starting",
             config.model, config.bn, config.strategy, replicas, global_batch,
             stream.steps_per_epoch, workdir.path)
    start = time.perf_counter()
    try:
        for epoch in range(resume.epoch, config.epochs):
            model.fit(stream.epoch(epoch), validation_data=datasets["validation"],
                      initial_epoch=epoch, epochs=config.epochs, callbacks=named["all"],
                      verbose=1 if config.verbose == 1 else 0, shuffle=False)
            if named["nan_guard"].diverged_at is not None:
                break
    finally:
        writers.close()
    train_seconds = time.perf_counter() - start
    test_loss, test_accuracy = model.evaluate(datasets["test"], verbose=0)
    history = named["commit"].history
    nan_guard = named["nan_guard"]
    val = [row["val_accuracy"] for row in history if "val_accuracy" in row]
    speeds = [row["images_per_second"] for row in history]
    metrics = {
        "test_loss": float(test_loss),
        "test_accuracy": float(test_accuracy),
        "epochs": config.epochs,
        "final_val_accuracy": val[-1] if val else None,
        "best_val_accuracy": max(val) if val else None,
        "epochs_run_this_session": len(history) - resume.epoch,
        "train_seconds_this_session": train_seconds,
        # Steady state: the first epoch also traces the training function.
        "train_images_per_second": statistics.median(speeds[1:] or speeds) if speeds else None,
        "diverged": nan_guard.diverged_at is not None,
        "diverged_at_epoch": None if nan_guard.diverged_at is None else nan_guard.diverged_at[0],
        "replicas": replicas,
        "global_batch_size": global_batch,
        "num_params": int(model.count_params()),
        "history": history,
        "loss_curve": named["loss_every_n"].points,
    }
    if nan_guard.diverged_at is not None:
        log.warning("training diverged: the loss became NaN/inf in %s (try a lower learning "
                    "rate, or BN)", nan_guard.describe())
    workdir.finish(model, metrics)
    return metrics
