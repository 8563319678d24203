"""`TrainConfig`: everything that defines a training run, and every rule about it.

`validate()` is the one place where a configuration is checked, before a run
writes anything: choices, ranges, combinations, and the BN layer's own
argument rules (by asking the models to check their options, not by copying
them here). `resume_conflicts` says which changes an unfinished or finished
run in a work directory can take.

Building a TrainConfig imports nothing heavy; `validate()` imports Keras (and with
it TensorFlow) to ask the models and the strategies for their choices.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from bn_keras.data import cifar
from bn_keras.errors import InvalidSetting

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine", "warmup_cosine")
DATASETS = ("cifar10", "synthetic")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# Fields that change how or where a run is carried out or reported, never its numbers:
# a resumed run may change them (a workdir moved to another disk resumes there).
RESUMABLE_FIELDS = ("verbose", "data_dir", "download", "steps_per_execution", "workdir")
# Schedules whose shape does not depend on the number of epochs: only these let a
# finished run continue for more epochs with a well-defined result.
EXTENSIBLE_SCHEDULES = ("constant",)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run. `batch_size` is per replica."""

    model: str = "lenet"
    bn: str = "custom"
    bn_momentum: float = 0.99
    bn_placement: str = "before_relu"
    virtual_batch_size: int | None = None
    renorm: bool = False
    zero_init_residual: bool = False  # ResNet-20: each block's last BN starts at gamma = 0
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = True
    synthetic_examples: int = 1024
    train_examples: int | None = None  # the first N of the training split (quick studies)
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 500  # evaluation only: BN uses its moving statistics there
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    sgd_momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0  # decoupled, on conv/dense kernels only (not BN, not biases)
    label_smoothing: float = 0.0
    lr_schedule: str = "constant"
    warmup_epochs: int = 1
    augment: bool = False
    # Weight EMA (None: off): validation, checkpoints, the final model and its test use
    # the averages of the trained weights, BN statistics re-estimated for them.
    ema_momentum: float | None = None
    # Training batches (unaugmented) over which BN's moving statistics are re-estimated for
    # the evaluated weights (bn_keras.layers.recalibrate_batch_norm); 0: never; None: 0,
    # or RECALIBRATION_BATCHES with an EMA.
    recalibrate_bn_batches: int | None = None
    strategy: str = "auto"
    tpu: str | None = None
    mixed_precision: str = "float32"
    jit_compile: bool = False  # XLA for the training step
    # TensorFlow's threads per op and ops at a time (0: its default, one per core); None:
    # the fastest measured for the step's size (see resolved_threads).
    threads: int | None = None
    workdir: str = "runs/lenet_custom"
    seed: int = 0
    deterministic: bool = True
    steps_per_execution: int | None = None  # None: the largest divisor of log_every_n_steps <= 50
    log_every_n_steps: int = 100
    diagnostics_every_n_steps: int | None = None
    probe_size: int = 256
    test_every_epoch: bool = False  # test loss/accuracy after every epoch (the BN study)
    verbose: int = 2

    def validate(self) -> None:
        """Raises InvalidSetting naming the first bad field, its value and what was expected."""
        from bn_keras import models
        from bn_keras.train import distribute

        choices = {"model": tuple(models.MODEL_BUILDERS), "bn": models.BN_CHOICES,
                   "bn_placement": models.PLACEMENTS, "dataset": DATASETS,
                   "optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES,
                   "strategy": distribute.STRATEGIES, "mixed_precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InvalidSetting(f"{name}={getattr(self, name)!r} is not one of "
                                     f"{', '.join(allowed)}.")
        if self.threads is not None and self.threads < 0:
            raise InvalidSetting(f"threads must be 0 (TensorFlow's default) or more, got "
                                 f"{self.threads}.")
        for name in ("epochs", "batch_size", "eval_batch_size", "steps_per_execution",
                     "synthetic_examples", "probe_size", "log_every_n_steps", "train_examples",
                     "diagnostics_every_n_steps", "virtual_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidSetting(f"{name} must be at least 1, got {value}.")
        for name, low, high, closed in NUMBER_RANGES:
            if getattr(self, name) is not None:
                _check_range(name, getattr(self, name), low, high, closed)
        if self.recalibrate_bn_batches is not None and self.recalibrate_bn_batches < 0:
            raise InvalidSetting(f"recalibrate_bn_batches must be 0 (never) or more, got "
                                 f"{self.recalibrate_bn_batches}.")
        if self.batch_size > self.training_examples:
            raise InvalidSetting(
                f"batch_size={self.batch_size} is more than the {self.training_examples:,} "
                "training examples; pick a batch size of at most that.")
        if self.warmup_epochs < 0:
            raise InvalidSetting(f"warmup_epochs must be >= 0, got {self.warmup_epochs}.")
        if self.model == "conv1d_example" and self.dataset != "synthetic":
            raise InvalidSetting("model='conv1d_example' trains on dataset='synthetic' "
                                 "sequences only.")
        if self.strategy == "tpu" and not self.tpu:
            raise InvalidSetting("strategy='tpu' needs a TPU address: --tpu=local on a Cloud "
                                 "TPU VM, or the TPU's name or grpc:// address.")
        self._validate_bn()

    def _validate_bn(self) -> None:
        if self.bn == "none":
            for name in ("virtual_batch_size", "renorm", "recalibrate_bn_batches"):
                if getattr(self, name):
                    raise InvalidSetting(f"{name}={getattr(self, name)!r} needs BN: pick "
                                         "bn=keras or bn=custom.")
        vbs = self.virtual_batch_size
        if vbs is not None:
            if self.bn != "custom":
                raise InvalidSetting(f"virtual_batch_size={vbs} (Ghost BN) needs bn='custom': "
                                     "Keras 3's BatchNormalization has no such argument.")
            if self.batch_size % vbs:
                raise InvalidSetting(
                    f"virtual_batch_size={vbs} does not divide the batch size per replica "
                    f"{self.batch_size} (--batch_size is per replica); pick a group size that "
                    f"divides it, e.g. {_largest_divisor(self.batch_size, vbs)}.")
        # The model and its BN layers check their own arguments (e.g. renorm with Ghost BN),
        # in Keras' words: the layer raises what Keras' layer raises.
        from bn_keras import models

        try:
            models.check_options(self.model, self.bn, **self.model_options(num_replicas=1))
        except (ValueError, TypeError) as e:
            raise InvalidSetting(str(e)) from None

    def resolved_threads(self) -> int:
        """TensorFlow's threads for this run: `threads` if given, else 1 for a small step
        on one device (LeNet up to batch 46), else 0 (TensorFlow's default, one per core).

        Measured on 2 cores, LeNet with our BN: one thread trains 40% faster at batch 10
        and 20% at batch 32 (the threads' hand-offs cost more than the arithmetic they
        share), 6% slower at batch 64; ResNet-20 at batch 128 runs at half the speed.
        """
        if self.threads is not None:
            return self.threads
        from bn_keras import models

        one_device = self.strategy in ("auto", "one_device")
        step = models.MACS_PER_EXAMPLE[self.model] * self.batch_size
        return 1 if one_device and step <= SMALL_STEP_MACS else 0

    def resolved_recalibration_batches(self) -> int:
        """Batches for re-estimating BN statistics: `recalibrate_bn_batches` if given, else
        RECALIBRATION_BATCHES with an EMA (averaged weights need statistics of their own)
        and BN, else 0."""
        if self.recalibrate_bn_batches is not None:
            return self.recalibrate_bn_batches
        return RECALIBRATION_BATCHES if self.ema_momentum and self.bn != "none" else 0

    @property
    def training_examples(self) -> int:
        """How many examples an epoch of this configuration trains on."""
        if self.dataset == "synthetic":
            return self.synthetic_examples
        full = cifar.SPLIT_SIZES["train"]
        return min(self.train_examples or full, full)

    def model_options(self, num_replicas: int) -> dict[str, Any]:
        """Keyword arguments of `models.build_model` for this configuration."""
        options: dict[str, Any] = {}
        if self.bn != "none":
            # Ghost BN groups are per replica by nature; other BN layers reduce their
            # statistics across replicas, as one device would over the global batch.
            options = {"momentum": self.bn_momentum,
                       "synchronized": num_replicas > 1 and not self.virtual_batch_size}
            if self.renorm:
                options["renorm"] = True
            if self.virtual_batch_size:
                options["virtual_batch_size"] = self.virtual_batch_size
        if self.model == "conv1d_example":
            options["num_classes"] = cifar.NUM_CLASSES  # a logits head, to train it
        else:
            options["placement"] = self.bn_placement
        if self.zero_init_residual:
            options["zero_init_residual"] = True
        return options

    def resolved_steps_per_execution(self, mirrored_replicas: int = 1) -> int:
        """Training steps per tf.function call: the flag, or the largest divisor of
        log_every_n_steps up to 50, so every loss window ends on a reported step.

        With several replicas of a (multi-worker) MirroredStrategy, Keras 3.15's
        multi-step training function fails ("You must feed a value for placeholder
        tensor ..." in its while loop, with or without BN), so it is 1 there.
        """
        if mirrored_replicas > 1:
            if (self.steps_per_execution or 1) > 1:
                raise InvalidSetting(
                    f"steps_per_execution={self.steps_per_execution} does not work with "
                    f"{mirrored_replicas} replicas: Keras 3.15's multi-step training function "
                    "fails under MirroredStrategy; leave --steps_per_execution unset.")
            return 1
        if self.steps_per_execution is not None:
            return self.steps_per_execution
        return _largest_divisor(self.log_every_n_steps, 50)


# Re-estimating BN statistics for averaged weights, by default: 100 training batches
# (12,800 images at batch 128; fvcore's precise BN uses 200).
RECALIBRATION_BATCHES = 100

# Forward multiply-adds per training step up to which a step runs faster on one thread:
# between LeNet at batch 32 (20.9M: one thread faster) and 64 (41.7M: slower).
SMALL_STEP_MACS = 30_000_000

# (field, low, high, high included): every float and bounded integer setting. A NaN or an
# infinity is refused by any range.
NUMBER_RANGES = (
    ("learning_rate", 0, math.inf, True),  # > 0
    ("bn_momentum", 0, 1, False),
    ("sgd_momentum", 0, 1, False),
    ("label_smoothing", 0, 1, False),
    ("weight_decay", 0, 1, True),
    ("ema_momentum", 0, 1, False),
    ("seed", 0, 2**32 - 1, True),
)
POSITIVE_FIELDS = ("learning_rate", "ema_momentum")  # low excluded


def _check_range(name: str, value: float, low: float, high: float, high_included: bool
                 ) -> None:
    positive = name in POSITIVE_FIELDS
    inside = ((value > low if positive else value >= low)
              and (value <= high if high_included else value < high))
    if not (math.isfinite(value) and inside):
        expected = ("a positive finite number" if high == math.inf else
                    f"a number in {'(' if positive else '['}{low}, {high}"
                    f"{']' if high_included else ')'}")
        raise InvalidSetting(f"{name} must be {expected}, got {value}.")


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def differences(previous: dict[str, Any], config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """{field: (previous value, new value)} for every field in which `config` differs from
    a recorded configuration (a workdir's config.json, a study's cached run).

    A field the record lacks was added to TrainConfig after it was written: it counts as
    its default, so new settings never make an existing run unresumable. Floats compare
    as values (a NaN recorded by an older version equals a NaN).
    """
    defaults = dataclasses.asdict(TrainConfig())
    current = dataclasses.asdict(config)
    recorded = {**defaults, **{k: v for k, v in previous.items() if k in current}}
    return {k: (recorded[k], current[k]) for k in current if not _same(recorded[k], current[k])}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def resume_conflicts(previous: dict[str, Any], config: TrainConfig,
                     completed_epochs: int) -> str | None:
    """Why `config` cannot continue the run recorded as `previous`, or None if it can.

    A run continues with the same settings; changing only fields in
    RESUMABLE_FIELDS is allowed. Raising `epochs` continues training ("train 10
    more") where the learning rate does not depend on the number of epochs.
    """
    changed = {k: v for k, v in differences(previous, config).items()
               if k not in RESUMABLE_FIELDS and k != "epochs"}
    if changed:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        return f"it holds a run with other settings ({listed})"
    old_epochs = previous.get("epochs")
    if config.epochs == old_epochs:
        return None
    if config.epochs < completed_epochs:
        return (f"it holds {completed_epochs} trained epochs, more than epochs={config.epochs}")
    if config.lr_schedule not in EXTENSIBLE_SCHEDULES:
        return (f"epochs changed from {old_epochs} to {config.epochs}, but "
                f"lr_schedule={config.lr_schedule!r} is shaped by the number of epochs, so the "
                "epochs already trained would not be those of the longer run")
    return None
