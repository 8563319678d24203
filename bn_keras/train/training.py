"""Training: `run(config) -> RunResult`, everything a run writes under `config.workdir`.

The recipe: check the configuration and the work directory (nothing is
written before both pass), build the data and the model, restore the last
committed epoch if there is one, then train one epoch per `model.fit` call on
that epoch's data (a function of the seed and the epoch, bn_keras.data.pipelines),
committing each finished epoch (bn_keras.train.resume), and evaluate on the test
split. A run stopped at any moment and started again with the same command
continues from its last completed epoch and ends with the same numbers as a
run that never stopped (with `deterministic`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
import time

import keras
import tensorflow as tf

from bn_keras import environment, keras_compat, models
from bn_keras.data import pipelines, sources
from bn_keras.data.pipelines import Pipelines
from bn_keras.data.sources import Examples
from bn_keras.errors import InvalidSetting
from bn_keras.layers import batch_norm_layers
from bn_keras.precision import dtype_policy
from bn_keras.train import averaging, callbacks, distribute
from bn_keras.train.config import TrainConfig
from bn_keras.train.events import SummaryWriters
from bn_keras.train.losses import make_loss
from bn_keras.train.optimizers import make_optimizer
from bn_keras.train.results import Recalibrated, RunResult
from bn_keras.train.resume import EpochCommit, OneEpochPerFit
from bn_keras.train.workdir import Resume, Workdir, worker_scratch

log = logging.getLogger(__name__)


def set_seed(seed: int, deterministic: bool, xla: bool = False) -> None:
    """Seeds Python, NumPy and TensorFlow; makes TensorFlow's ops deterministic.

    With `xla`, TensorFlow's op determinism stays off, since Keras turns XLA off when it
    is on; XLA's CPU programs repeat to the last digit by themselves (measured, and
    tested: tests/backends/test_xla.py), and on a GPU the combination is refused (`run`).
    """
    keras.utils.set_random_seed(seed)
    if deterministic and not xla:
        tf.config.experimental.enable_op_determinism()
    else:  # it may be left on by an earlier run in this process
        keras_compat.disable_op_determinism()


def load_splits(config: TrainConfig, num_replicas: int = 1) -> dict[str, Examples]:
    """The run's "train", "validation" and "test" examples in memory: a function of
    `config` alone (the synthetic evaluation sets hold at least one global batch)."""
    if config.dataset == "synthetic":
        global_batch = config.batch_size * num_replicas
        # A quarter of the training set, and at least one batch where it holds one: never
        # more examples than a flag asks to train on.
        num_eval = max(config.synthetic_examples // 4,
                       min(global_batch, config.synthetic_examples))
        return sources.synthetic_splits(config.synthetic_examples, num_eval, config.seed,
                                        sequences=config.model == "conv1d_example")
    return sources.cifar10_splits(config.data_dir, config.download, config.train_examples)


def make_datasets(config: TrainConfig, num_replicas: int = 1, drop_remainder: bool = False,
                  splits: dict[str, Examples] | None = None) -> Pipelines:
    """The run's pipelines of global batches (`batch_size` and `eval_batch_size` examples
    per replica), over `splits` if given (else `load_splits(config)`)."""
    sequences = config.model == "conv1d_example"
    return pipelines.pipelines(
        splits or load_splits(config, num_replicas), config.batch_size * num_replicas,
        config.eval_batch_size * num_replicas, config.seed, config.augment and not sequences,
        drop_remainder, preprocess=None if sequences else pipelines.normalize_images)


def build_compiled_model(config: TrainConfig, num_replicas: int, steps_per_epoch: int,
                         steps_per_execution: int = 1) -> keras.Model:
    """The configured model, compiled with its optimizer, loss and accuracy metric."""
    model = models.build_model(config.model, config.bn, **config.model_options(num_replicas))
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=make_loss(config),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution,
        jit_compile=config.jit_compile,
    )
    if config.jit_compile and not model.jit_compile:
        raise InvalidSetting(  # Keras turns XLA off with only a warning; we do not
            "jit_compile was asked for, but Keras turned XLA off for this model (TensorFlow's "
            "op determinism on, or a layer without XLA support); no XLA, no run.")
    return model


def evaluated_weights(config: TrainConfig, model: keras.Model,
                      stream: pipelines.TrainingStream) -> averaging.EvaluatedWeights:
    """The weights the run evaluates and keeps: the EMA with `ema_momentum`, with BN
    statistics re-estimated over the first batches of epoch 1's order, unaugmented."""
    return averaging.EvaluatedWeights(
        model, use_average=bool(config.ema_momentum),
        batches=config.resolved_recalibration_batches(),
        data=lambda: stream.epoch(0, augment=False))


def probe_batch(dataset: tf.data.Dataset, size: int):
    """A fixed batch of up to `size` examples for the diagnostics."""
    return next(iter(dataset.unbatch().batch(size)))


@dataclasses.dataclass
class RunCallbacks:
    """A run's callbacks by role, in the order `fit` calls them (`in_order()`).

    `extra` are the caller's own: they run after the epoch's values are measured
    (throughput, learning rate, loss windows, NaN guard) and before anything writes
    the epoch (summaries, diagnostics, checkpoints, the commit), so they may read
    those values and add their own to the epoch's logs.

    `evaluated_weights` (with an EMA or re-estimated BN statistics) holds the evaluated
    weights in the model from validation until its turn: the per-epoch test and the best
    checkpoint see them; diagnostics and the commit see the trained ones.
    """

    throughput: callbacks.Throughput
    learning_rate: callbacks.LearningRateLog
    loss_every_n: callbacks.LossEveryN
    nan_guard: callbacks.NaNGuard
    extra: list[keras.callbacks.Callback]
    evaluate_each_epoch: callbacks.EvaluateEachEpoch | None
    summaries: callbacks.EpochSummaries
    best: callbacks.BestCheckpoint
    evaluated_weights: averaging.SwapEvaluatedWeights | None
    diagnostics: callbacks.BNDiagnostics
    epoch_log: callbacks.EpochLog | None
    commit: EpochCommit
    one_epoch_per_fit: OneEpochPerFit

    def in_order(self) -> list[keras.callbacks.Callback]:
        ordered = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            ordered += value if isinstance(value, list) else [value] if value else []
        return ordered


def get_callbacks(config: TrainConfig, workdir: Workdir, writers: SummaryWriters, probe,
                  examples_per_epoch: int, resume: Resume,
                  test_dataset: tf.data.Dataset | None = None,
                  extra: list[keras.callbacks.Callback] | None = None,
                  evaluated: averaging.EvaluatedWeights | None = None) -> RunCallbacks:
    """A run's callbacks. `probe` is the (inputs, labels) batch of the BN diagnostics;
    `test_dataset`, when given, is evaluated after every epoch (EvaluateEachEpoch);
    `evaluated`, when it changes anything, is swapped in for each epoch's evaluation."""
    measured = dict(
        throughput=callbacks.Throughput(examples_per_epoch),
        learning_rate=callbacks.LearningRateLog(),
        loss_every_n=callbacks.LossEveryN(config.log_every_n_steps, writers),
        nan_guard=callbacks.NaNGuard(),
        evaluate_each_epoch=(None if test_dataset is None
                             else callbacks.EvaluateEachEpoch(test_dataset)),
        summaries=callbacks.EpochSummaries(writers),
        diagnostics=callbacks.BNDiagnostics(writers, *probe, config.diagnostics_every_n_steps),
        best=callbacks.BestCheckpoint(workdir),
        evaluated_weights=(averaging.SwapEvaluatedWeights(evaluated)
                           if evaluated is not None and evaluated.changes_anything else None),
        epoch_log=callbacks.EpochLog() if config.verbose == 2 else None)
    stateful = [c for c in measured.values() if getattr(c, "state_key", None)]
    return RunCallbacks(**measured, extra=list(extra or []),
                        commit=EpochCommit(workdir, writers, resume, stateful),
                        one_epoch_per_fit=OneEpochPerFit())


def run(config: TrainConfig, datasets_override: Pipelines | None = None,
        strategy_override: tf.distribute.Strategy | None = None,
        extra_callbacks: list[keras.callbacks.Callback] | None = None) -> RunResult:
    """Trains and evaluates one model; returns its RunResult (also kept as the workdir's
    final_metrics.json).

    `datasets_override` (pipelines of global batches) and `strategy_override` let tests
    and other programs supply their own; `extra_callbacks` join the run's
    (`RunCallbacks.extra`).
    """
    config.validate()
    # Both must be set before TensorFlow runs any op: its threads, and multi-worker
    # collectives.
    distribute.use_threads(config.resolved_threads())
    strategy = strategy_override or distribute.get_strategy(config.strategy, tpu=config.tpu)
    with dtype_policy(config.mixed_precision):
        return _run(config, datasets_override, strategy, extra_callbacks or [])


def _run(config, datasets_override, strategy, extra_callbacks):
    replicas = strategy.num_replicas_in_sync
    mirrored = isinstance(strategy, (tf.distribute.MirroredStrategy,
                                     tf.distribute.MultiWorkerMirroredStrategy))
    # Refuses impossible settings before anything is written.
    steps_per_execution = config.resolved_steps_per_execution(replicas if mirrored else 1)
    _check_xla(config, replicas if mirrored else 1)
    shared = Workdir(config.workdir)
    with contextlib.ExitStack() as stack:
        if distribute.is_chief(strategy):
            stack.enter_context(shared.locked())  # the one writer of the workdir
            workdir = shared
        else:
            # Other workers of a multi-worker run resume from the chief's commits, which
            # hold the same weights, and write their own files to private scratch space.
            workdir = Workdir(stack.enter_context(
                worker_scratch(config.workdir, distribute.task_name(strategy))))
        resume = shared.check(config)
        saved = (f"Run the same command on every worker again to resume from the last "
                 f"committed epoch in {config.workdir}.")
        with workdir.writing(workdir.path), distribute.peers_watched(strategy, saved):
            return _train(config, datasets_override, strategy, extra_callbacks, workdir,
                          resume, steps_per_execution)


def _check_xla(config: TrainConfig, mirrored_replicas: int) -> None:
    if not config.jit_compile:
        return
    if mirrored_replicas > 1:
        raise InvalidSetting(
            f"jit_compile with {mirrored_replicas} replicas: Keras 3.15's fit with XLA fails "
            "under MirroredStrategy, even for Keras' own BN and a plain Conv2D (\"Trying to "
            "access resource ... replica_1\"); train on one device, or drop `jit_compile`.")
    if config.deterministic and tf.config.list_logical_devices("GPU"):
        raise InvalidSetting(
            "jit_compile with deterministic on a GPU: XLA's GPU programs are not proven to "
            "repeat to the last digit here, and Keras turns XLA off under TensorFlow's op "
            "determinism; pass deterministic=False for XLA, or drop `jit_compile`.")


def _train(config, datasets_override, strategy, extra_callbacks, workdir, resume,
           steps_per_execution):
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    # Every replica must get a full batch under TPUs and multi-worker training.
    drop_remainder = config.strategy in ("tpu", "multi_worker_mirrored") or replicas > 1
    datasets = datasets_override or make_datasets(config, replicas, drop_remainder)
    stream = datasets.train
    with strategy.scope():
        # Initial weights: a function of the seed.
        set_seed(config.seed, config.deterministic, xla=config.jit_compile)
        model = build_compiled_model(config, replicas, stream.steps_per_epoch,
                                     steps_per_execution)
        workdir.start(config, resume)
        if resume.epoch:
            workdir.restore(model, resume)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and replicas > 1:
        distribute.work_around_keras_multi_worker(model)
    elif replicas > 1:
        distribute.build_from_first_replica(model)
    writers = SummaryWriters(workdir.tensorboard)
    evaluated = evaluated_weights(config, model, stream)
    run_callbacks = get_callbacks(
        config, workdir, writers, probe_batch(datasets.validation, config.probe_size),
        stream.examples_per_epoch, resume,
        test_dataset=datasets.test if config.test_every_epoch else None,
        extra=extra_callbacks, evaluated=evaluated)
    log.info("%s: model=%s bn=%s strategy=%s replicas=%d global_batch=%d steps/epoch=%d "
             "workdir=%s", f"resuming after epoch {resume.epoch}" if resume.epoch else "starting",
             config.model, config.bn, config.strategy, replicas, global_batch,
             stream.steps_per_epoch, workdir.path)
    nan_guard = run_callbacks.nan_guard
    start = time.perf_counter()
    try:
        for epoch in range(resume.epoch, config.epochs):
            model.fit(stream.epoch(epoch), validation_data=datasets.validation,
                      initial_epoch=epoch, epochs=config.epochs,
                      callbacks=run_callbacks.in_order(),
                      verbose=1 if config.verbose == 1 else 0, shuffle=False)
            if nan_guard.diverged_at is not None:
                break
    finally:
        writers.close()
    train_seconds = time.perf_counter() - start
    variants, recalibration = None, None
    if evaluated.changes_anything:
        variants = averaging.evaluate_variants(model, evaluated, datasets.test)
        recalibration = evaluated.apply()  # the final model holds the evaluated weights
    test_loss, test_accuracy = model.evaluate(datasets.test, verbose=0)
    history = run_callbacks.commit.history
    val = [row["val_accuracy"] for row in history if "val_accuracy" in row]
    speeds = [row["images_per_second"] for row in history]
    result = RunResult(
        test_loss=float(test_loss), test_accuracy=float(test_accuracy), epochs=config.epochs,
        history=history, loss_curve=run_callbacks.loss_every_n.points,
        final_val_accuracy=val[-1] if val else None, best_val_accuracy=max(val) if val else None,
        epochs_run_this_session=len(history) - resume.epoch,
        train_seconds_this_session=train_seconds,
        train_images_per_second=statistics.median(speeds[1:] or speeds) if speeds else None,
        diverged=nan_guard.diverged_at is not None,
        diverged_at_epoch=None if nan_guard.diverged_at is None else nan_guard.diverged_at[0],
        replicas=replicas, global_batch_size=global_batch,
        tensorflow_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        num_params=int(model.count_params()), measured_on=environment.summary(),
        workers_agree=(distribute.workers_agree(model, strategy) if isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy) and replicas > 1 else None),
        evaluated_weights="averaged" if evaluated.use_average else "trained",
        bn_statistics=(None if not batch_norm_layers(model) else
                       "re-estimated" if recalibration else "moving"),
        recalibration=recalibration and Recalibrated(recalibration.batches,
                                                     recalibration.examples),
        test_variants=variants)
    if nan_guard.diverged_at is not None:
        log.warning("training diverged: the loss became NaN/inf in %s (try a lower learning "
                    "rate, or BN)", nan_guard.describe())
    workdir.finish(model, result)
    return result
