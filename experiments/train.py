"""Trains a BN model on CIFAR-10 (or synthetic data) and evaluates it on the test split.

Everything the run writes goes under --workdir: config.json, TensorBoard logs
(tensorboard/, with BN diagnostics), checkpoints/best.keras, metrics.csv and
final_metrics.json. Stop it at any time; the same command resumes from the
last completed epoch.

    python experiments/train.py --model=lenet --bn=custom --epochs=10 \\
        --data_dir=../shared/datasets/tensorflow_datasets --workdir=runs/lenet_custom
    tensorboard --logdir=runs/lenet_custom/tensorboard
"""

from __future__ import annotations

import dataclasses
import sys

from bn_keras import cli

cli.quiet_tensorflow()

from absl import flags  # noqa: E402

from bn_keras import models  # noqa: E402
from bn_keras.errors import UserError  # noqa: E402
from bn_keras.train import averaging, distribute, training, workdir  # noqa: E402
from bn_keras.train import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
DEFAULTS = config_lib.TrainConfig()


def define_flags() -> None:
    flags.DEFINE_enum("model", DEFAULTS.model, list(models.MODEL_BUILDERS), "Network to train.")
    flags.DEFINE_enum("bn", DEFAULTS.bn, list(models.BN_CHOICES),
                      "Batch normalization: none, keras (built-in) or custom (bn_keras').")
    flags.DEFINE_float("bn_momentum", DEFAULTS.bn_momentum, "BN moving-average momentum.")
    flags.DEFINE_enum("bn_placement", DEFAULTS.bn_placement, list(models.PLACEMENTS),
                      "BN before or after each ReLU.")
    flags.DEFINE_integer("virtual_batch_size", None, "Ghost BN group size (bn=custom only).",
                         lower_bound=1)
    flags.DEFINE_bool("renorm", DEFAULTS.renorm, "Use batch renormalization.")
    flags.DEFINE_bool("zero_init_residual", DEFAULTS.zero_init_residual,
                      "ResNet-20: start each residual block's last BN at gamma = 0, so every "
                      "block starts as the identity (Goyal et al. 2017).")
    flags.DEFINE_enum("dataset", DEFAULTS.dataset, list(config_lib.DATASETS),
                      "cifar10 (real, via tensorflow-datasets) or synthetic (smoke tests).")
    flags.DEFINE_string("data_dir", None, "TFDS data directory holding cifar10/ (default: "
                        "$TFDS_DATA_DIR, else ~/tensorflow_datasets, downloading if needed).")
    flags.DEFINE_bool("download", DEFAULTS.download,
                      "Let TFDS download CIFAR-10 when it is not prepared in the data dir.")
    flags.DEFINE_integer("epochs", DEFAULTS.epochs, "Training epochs.", lower_bound=1)
    flags.DEFINE_integer("batch_size", DEFAULTS.batch_size, "Batch size per replica.",
                         lower_bound=1)
    flags.DEFINE_integer("eval_batch_size", DEFAULTS.eval_batch_size,
                         "Evaluation batch size per replica (speed only: evaluation uses BN's "
                         "moving statistics).", lower_bound=1)
    flags.DEFINE_enum("optimizer", DEFAULTS.optimizer, list(config_lib.OPTIMIZERS),
                      "adam, or sgd with --sgd_momentum.")
    flags.DEFINE_float("learning_rate", DEFAULTS.learning_rate, "Peak learning rate.")
    flags.DEFINE_float("sgd_momentum", DEFAULTS.sgd_momentum, "Momentum of SGD.")
    flags.DEFINE_bool("nesterov", DEFAULTS.nesterov, "Nesterov momentum for SGD.")
    flags.DEFINE_float("weight_decay", DEFAULTS.weight_decay,
                       "Decoupled weight decay (AdamW/SGDW) of conv and dense kernels; BN's "
                       "gamma/beta and biases are not decayed.")
    flags.DEFINE_float("label_smoothing", DEFAULTS.label_smoothing,
                       "Label smoothing of the cross-entropy loss.")
    flags.DEFINE_enum("lr_schedule", DEFAULTS.lr_schedule, list(config_lib.LR_SCHEDULES),
                      "constant, cosine decay, or warmup_cosine (linear warm-up, then cosine).")
    flags.DEFINE_integer("warmup_epochs", DEFAULTS.warmup_epochs,
                         "Warm-up length for warmup_cosine.", lower_bound=0)
    flags.DEFINE_bool("augment", DEFAULTS.augment, "Random crop and flip on training images.")
    flags.DEFINE_float("ema_momentum", None,
                       "Keep an exponential moving average of the weights with this momentum "
                       "(e.g. 0.999): validation, checkpoints, the final model and its test use "
                       "it, with BN statistics re-estimated for it.")
    flags.DEFINE_integer("recalibrate_bn_batches", None,
                         "Re-estimate BN's moving statistics for the evaluated weights over N "
                         "unaugmented training batches, before each validation and the final "
                         "test (0: never; default: 0, or "
                         f"{config_lib.RECALIBRATION_BATCHES} with --ema_momentum).",
                         lower_bound=0)
    flags.DEFINE_enum("strategy", DEFAULTS.strategy, list(distribute.STRATEGIES),
                      "tf.distribute strategy.")
    flags.DEFINE_string("tpu", None, "TPU address for --strategy=tpu ('local' on a TPU VM).")
    flags.DEFINE_enum("mixed_precision", DEFAULTS.mixed_precision, list(config_lib.PRECISIONS),
                      "Keras dtype policy.")
    flags.DEFINE_bool("jit_compile", DEFAULTS.jit_compile,
                      "Compile the training and evaluation steps with XLA (with --deterministic "
                      "on a CPU: XLA's programs repeat to the last digit).")
    flags.DEFINE_integer("threads", None, "TensorFlow's threads per op and ops at a time (0: "
                         "its default, one per core; default: 1 for small steps on one device, "
                         "e.g. LeNet up to batch 46, where it is faster, else 0).",
                         lower_bound=0)
    flags.DEFINE_string("workdir", None, "Directory for everything the run writes "
                        "(default: runs/<model>_<bn>).")
    flags.DEFINE_integer("seed", DEFAULTS.seed, "Random seed (data order, augmentation, init).")
    flags.DEFINE_bool("deterministic", DEFAULTS.deterministic,
                      "TensorFlow op determinism: identical runs for the same seed.")
    flags.DEFINE_integer("steps_per_execution", None,
                         "Training steps per tf.function call (default: the largest divisor of "
                         "--log_every_n_steps up to 50; results do not depend on it).",
                         lower_bound=1)
    flags.DEFINE_integer("log_every_n_steps", DEFAULTS.log_every_n_steps,
                         "Training loss to TensorBoard every N steps.", lower_bound=1)
    flags.DEFINE_integer("diagnostics_every_n_steps", None,
                         "BN diagnostics every N steps as well as every epoch.", lower_bound=1)
    flags.DEFINE_integer("probe_size", DEFAULTS.probe_size,
                         "Validation images in the BN diagnostics' fixed probe batch.",
                         lower_bound=1)
    flags.DEFINE_integer("synthetic_examples", DEFAULTS.synthetic_examples,
                         "Training examples of --dataset=synthetic.", lower_bound=1)
    flags.DEFINE_integer("train_examples", None, "Train on the first N training examples only.",
                         lower_bound=1)
    flags.DEFINE_bool("test_every_epoch", DEFAULTS.test_every_epoch,
                      "Also evaluate on the test split after every epoch (metrics.csv, "
                      "TensorBoard test/).")
    flags.DEFINE_integer("verbose", None, "0: silent, 1: progress bar, 2: one line per epoch "
                         "(default: 1 at a terminal, else 2).", lower_bound=0, upper_bound=2)


def config_from_flags(f, stdout_is_terminal: bool | None = None) -> config_lib.TrainConfig:
    """The TrainConfig the flags describe (workdir and verbosity resolved)."""
    names = [field.name for field in dataclasses.fields(config_lib.TrainConfig)]
    values = {name: f[name].value for name in names if name in f}
    values["workdir"] = f.workdir or f"runs/{f.model}_{f.bn}"
    if values.get("verbose") is None:
        terminal = sys.stdout.isatty() if stdout_is_terminal is None else stdout_is_terminal
        values["verbose"] = 1 if terminal else 2
    return config_lib.TrainConfig(**values)


def main(argv: list[str]) -> None:
    del argv
    config = config_from_flags(FLAGS)
    metrics = training.run(config)
    if metrics["diverged"]:
        raise UserError(f"training diverged (loss NaN/inf in epoch "
                         f"{metrics['diverged_at_epoch'] + 1}); lower --learning_rate or use BN. "
                         f"Results so far: {config.workdir}")
    with_bn = metrics["bn_statistics"] is not None
    for name, values in (metrics["test_variants"] or {}).items():
        print(f"  test accuracy with {averaging.variant_label(name, with_bn)}: "
              f"{values['test_accuracy']:.4f}")
    print(f"test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f}, "
          f"{metrics['train_images_per_second']:.0f} training images/s; "
          f"results in {config.workdir} (tensorboard --logdir={config.workdir}/tensorboard)")


def describe_saved() -> str:
    """What an interrupted run has kept, for the Ctrl-C message."""
    path = FLAGS.workdir or f"runs/{FLAGS.model}_{FLAGS.bn}"
    return workdir.describe(path)


if __name__ == "__main__":
    define_flags()
    cli.run(main, on_interrupt=describe_saved)
