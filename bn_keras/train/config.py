"""`TrainConfig`: everything that defines a training run, and every rule about it.

`validate()` is the one place where a configuration is checked, before a run
writes anything: choices, ranges, combinations, and the BN layer's own
argument rules (by asking the models to check their options, not by copying
them here). `resume_conflicts` says which changes an unfinished or finished
run in a work directory can take.

Neither building nor validating a TrainConfig imports Keras or TensorFlow: the choices
and rules come from bn_keras.models.options and bn_keras.layers.arguments. Each field
carries its help text and its flag's bounds (`setting`): bn_keras.cli makes
`experiments/train.py`'s flags from them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from bn_keras.data import cifar
from bn_keras.errors import InvalidSetting
from bn_keras.models import options as models
from bn_keras.models.options import BATCH_NORMS, BN_CHOICES, MODELS, PLACEMENTS

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine", "warmup_cosine")
DATASETS = ("cifar10", "synthetic")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# tf.distribute strategies by name (bn_keras.train.distribute.get_strategy).
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
# Synthetic training examples: 3 KB each as uint8, more in float32 once batched; a million
# (and a quarter more for evaluation) fits a few GB.
MAX_SYNTHETIC_EXAMPLES = 1_000_000
# TensorFlow threads per op beyond this many per core only cost memory (each thread has
# its stack; 10^8 of them filled 24 GB).
MAX_THREADS_PER_CORE = 16
# The largest finite float32: learning rates and other settings become float32 variables.
FLOAT32_MAX = 3.4028234663852886e38
# Re-estimating BN statistics for averaged weights, by default: 100 training batches
# (12,800 images at batch 128; fvcore's precise BN uses 200).
RECALIBRATION_BATCHES = 100
# Fields that change how or where a run is carried out or reported, never its numbers:
# a resumed run may change them (a workdir moved to another disk resumes there).
RESUMABLE_FIELDS = ("verbose", "data_dir", "download", "steps_per_execution", "workdir")
# Schedules whose shape does not depend on the number of epochs: only these let a
# finished run continue for more epochs with a well-defined result.
EXTENSIBLE_SCHEDULES = ("constant",)


def setting(default: Any, help: str, **flag: Any) -> Any:
    """A TrainConfig field with its help text, and what its command-line flag needs:
    `choices`, `lower_bound`, `upper_bound` (bn_keras.cli.define_config_flags makes the
    flags of `experiments/train.py` from these: one help text and one default each)."""
    return dataclasses.field(default=default, metadata={"help": help, **flag})


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run. `batch_size` is per replica."""

    model: str = setting("lenet", "Network to train.", choices=MODELS)
    bn: str = setting("custom", "Batch normalization: none, keras (built-in) or custom "
                      "(bn_keras'); or in BN's place group_norm (GroupNormalization, 2 groups) "
                      "or layer_norm (LayerNormalization over all non-batch axes).",
                      choices=BN_CHOICES)
    bn_momentum: float = setting(0.99, "BN moving-average momentum.")
    bn_placement: str = setting("before_relu", "BN before or after each ReLU.",
                                choices=PLACEMENTS)
    virtual_batch_size: int | None = setting(None, "Ghost BN group size (bn=custom only).",
                                             lower_bound=1)
    renorm: bool = setting(False, "Use batch renormalization.")
    zero_init_residual: bool = setting(
        False, "ResNet-20: start each residual block's last BN at gamma = 0, so every block "
        "starts as the identity (Goyal et al. 2017).")
    dataset: str = setting("cifar10", "cifar10 (real, via tensorflow-datasets) or synthetic "
                           "(smoke tests).", choices=DATASETS)
    data_dir: str | None = setting(
        None, "TFDS data directory holding cifar10/ (default: $TFDS_DATA_DIR, else "
        "~/tensorflow_datasets, downloading if needed).")
    download: bool = setting(True, "Let TFDS download CIFAR-10 when it is not prepared in the "
                             "data dir.")
    synthetic_examples: int = setting(1024, "Training examples of dataset=synthetic.",
                                      lower_bound=1, upper_bound=MAX_SYNTHETIC_EXAMPLES)
    train_examples: int | None = setting(
        None, "Train on the first N training examples only (quick studies).", lower_bound=1)
    epochs: int = setting(10, "Training epochs.", lower_bound=1)
    batch_size: int = setting(128, "Batch size per replica.", lower_bound=1)
    eval_batch_size: int = setting(500, "Evaluation batch size per replica (speed only: "
                                   "evaluation uses BN's moving statistics).", lower_bound=1)
    optimizer: str = setting("adam", "adam, or sgd with `sgd_momentum`.", choices=OPTIMIZERS)
    learning_rate: float = setting(1e-3, "Peak learning rate.")
    sgd_momentum: float = setting(0.9, "Momentum of SGD.")
    nesterov: bool = setting(False, "Nesterov momentum for SGD.")
    weight_decay: float = setting(
        0.0, "Decoupled weight decay (AdamW/SGDW) of conv and dense kernels; BN's gamma/beta "
        "and biases are not decayed.")
    label_smoothing: float = setting(0.0, "Label smoothing of the cross-entropy loss.")
    lr_schedule: str = setting("constant", "constant, cosine decay, or warmup_cosine (linear "
                               "warm-up, then cosine).", choices=LR_SCHEDULES)
    warmup_epochs: int = setting(1, "Warm-up length for warmup_cosine.", lower_bound=0)
    augment: bool = setting(False, "Random crop and flip on training images.")
    ema_momentum: float | None = setting(
        None, "Keep an exponential moving average of the weights with this momentum (e.g. "
        "0.999): validation, checkpoints, the final model and its test use it, with BN "
        "statistics re-estimated for it.")
    recalibrate_bn_batches: int | None = setting(
        None, "Re-estimate BN's moving statistics for the evaluated weights over N unaugmented "
        "training batches, before each validation and the final test (0: never; default: 0, "
        f"or {RECALIBRATION_BATCHES} with `ema_momentum`).", lower_bound=0)
    strategy: str = setting("auto", "tf.distribute strategy.", choices=STRATEGIES)
    tpu: str | None = setting(None, "TPU address for strategy=tpu ('local' on a TPU VM).")
    mixed_precision: str = setting("float32", "Keras dtype policy.", choices=PRECISIONS)
    jit_compile: bool = setting(False, "Compile the training and evaluation steps with XLA "
                                "(with `deterministic` on a CPU: XLA's programs repeat to the "
                                "last digit).")
    threads: int | None = setting(
        None, "TensorFlow's threads per op and ops at a time (0: its default, one per core; "
        "default: 1 for small steps on one device, e.g. LeNet up to batch 46, where it is "
        "faster, else 0).", lower_bound=0)
    workdir: str | None = setting(None, "Directory for everything the run writes (default: "
                                  "runs/<model>_<bn>).")
    seed: int = setting(0, "Random seed (data order, augmentation, init).")
    deterministic: bool = setting(True, "TensorFlow op determinism: identical runs for the "
                                  "same seed.")
    steps_per_execution: int | None = setting(
        None, "Training steps per tf.function call (default: the largest divisor of "
        "`log_every_n_steps` up to 50; results do not depend on it).", lower_bound=1)
    log_every_n_steps: int = setting(100, "Training loss to TensorBoard every N steps.",
                                     lower_bound=1)
    diagnostics_every_n_steps: int | None = setting(
        None, "BN diagnostics every N steps as well as every epoch.", lower_bound=1)
    probe_size: int = setting(256, "Validation images in the BN diagnostics' fixed probe "
                              "batch.", lower_bound=1)
    test_every_epoch: bool = setting(False, "Also evaluate on the test split after every "
                                     "epoch (metrics.csv, TensorBoard test/).")
    verbose: int = setting(2, "0: silent, 1: progress bar, 2: one line per epoch.",
                           lower_bound=0, upper_bound=2)

    def __post_init__(self):
        if self.workdir is None:
            self.workdir = f"runs/{self.model}_{self.bn}"

    def validate(self) -> None:
        """Raises InvalidSetting naming the first bad field, its value and what was expected.
        Imports neither Keras nor TensorFlow."""
        for field in dataclasses.fields(self):
            _check_field(field, getattr(self, field.name))
        for name, low, high, closed in NUMBER_RANGES:
            if getattr(self, name) is not None:
                _check_range(name, getattr(self, name), low, high, closed)
        cores = os.cpu_count() or 1
        if self.threads is not None and self.threads > max(MAX_THREADS_PER_CORE * cores, 64):
            raise InvalidSetting(
                f"threads={self.threads} is far more than this machine's {cores} cores can use "
                f"(at most {max(MAX_THREADS_PER_CORE * cores, 64)}); 0 means one per core.")
        if self.batch_size > self.training_examples:
            raise InvalidSetting(
                f"batch_size={self.batch_size} is more than the {self.training_examples:,} "
                "training examples; pick a batch size of at most that.")
        if self.model == "conv1d_example" and self.dataset != "synthetic":
            raise InvalidSetting("model='conv1d_example' trains on dataset='synthetic' "
                                 "sequences only.")
        if self.strategy == "tpu" and not self.tpu:
            raise InvalidSetting("strategy='tpu' needs a TPU address: tpu='local' on a Cloud "
                                 "TPU VM, or the TPU's name or grpc:// address.")
        for name, default in (("workdir", "runs/<model>_<bn>"),
                              ("data_dir", "$TFDS_DATA_DIR, else TFDS' default")):
            if getattr(self, name) == "":  # an unset shell variable, say
                raise InvalidSetting(f"{name}='' names no directory; give a path (None: "
                                     f"{default}).")
        self._validate_bn()

    def _validate_bn(self) -> None:
        if self.bn not in BATCH_NORMS:
            for name in ("virtual_batch_size", "renorm", "recalibrate_bn_batches"):
                if getattr(self, name):
                    raise InvalidSetting(f"{name}={getattr(self, name)!r} needs BN: pick "
                                         "bn=keras or bn=custom.")
        vbs = self.virtual_batch_size
        if vbs is not None and self.batch_size % vbs:
            raise InvalidSetting(
                f"virtual_batch_size={vbs} does not divide the batch size per replica "
                f"{self.batch_size} (`batch_size` is per replica); pick a group size that "
                f"divides it, e.g. {_largest_divisor(self.batch_size, vbs)}.")
        # The model and its BN layers' own rules (e.g. renorm with Ghost BN), in Keras'
        # words: the layer raises what Keras' layer raises.
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
        one_device = self.strategy in ("auto", "one_device")
        step = models.MACS_PER_EXAMPLE[self.model] * self.batch_size
        return 1 if one_device and step <= SMALL_STEP_MACS else 0

    def resolved_recalibration_batches(self) -> int:
        """Batches for re-estimating BN statistics: `recalibrate_bn_batches` if given, else
        RECALIBRATION_BATCHES with an EMA (averaged weights need statistics of their own)
        and BN, else 0."""
        if self.recalibrate_bn_batches is not None:
            return self.recalibrate_bn_batches
        return RECALIBRATION_BATCHES if self.ema_momentum and self.bn in BATCH_NORMS else 0

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
        if self.bn in BATCH_NORMS:
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
                    "fails under MirroredStrategy; leave `steps_per_execution` unset.")
            return 1
        if self.steps_per_execution is not None:
            return self.steps_per_execution
        return _largest_divisor(self.log_every_n_steps, 50)



# Forward multiply-adds per training step up to which a step runs faster on one thread:
# between LeNet at batch 32 (20.9M: one thread faster) and 64 (41.7M: slower).
SMALL_STEP_MACS = 30_000_000

# (field, low, high, high included): every float and bounded integer setting. A NaN or an
# infinity is refused by any range.
NUMBER_RANGES = (
    ("learning_rate", 0, FLOAT32_MAX, True),  # > 0, finite in float32
    ("bn_momentum", 0, 1, False),
    ("sgd_momentum", 0, 1, False),
    ("label_smoothing", 0, 1, False),
    ("weight_decay", 0, 1, True),
    ("ema_momentum", 0, 1, False),
    ("seed", 0, 2**32 - 1, True),
)
POSITIVE_FIELDS = ("learning_rate", "ema_momentum")  # low excluded


def _check_field(field: dataclasses.Field, value: Any) -> None:
    """The field's type (from its annotation), choices and bounds (from its metadata)."""
    kind, optional = field.type.replace(" | None", ""), field.type.endswith("| None")
    name = field.name
    if value is None:
        if not optional:
            raise InvalidSetting(f"{name}=None: a {kind} is needed.")
        return
    expected = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}[kind]
    if not isinstance(value, expected) or (kind != "bool" and isinstance(value, bool)):
        raise InvalidSetting(f"{name}={value!r} is not a{'n' if kind == 'int' else ''} {kind}.")
    meta = field.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise InvalidSetting(f"{name}={value!r} is not one of {', '.join(meta['choices'])}.")
    low, high = meta.get("lower_bound"), meta.get("upper_bound")
    if low is not None and value < low:
        raise InvalidSetting(f"{name} must be at least {low}, got {value}.")
    if high is not None and value > high:
        raise InvalidSetting(f"{name} must be at most {high:,}, got {value:,}.")


def _check_range(name: str, value: float, low: float, high: float, high_included: bool
                 ) -> None:
    positive = name in POSITIVE_FIELDS
    inside = ((value > low if positive else value >= low)
              and (value <= high if high_included else value < high))
    if not (math.isfinite(value) and inside):
        expected = ("a positive number, finite in float32 (at most 3.4e38)"
                    if high == FLOAT32_MAX else
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
