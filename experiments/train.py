"""Trains a BN model on CIFAR-10 (or synthetic data) and evaluates it on the test split.

Everything the run writes goes under --workdir: config.json, TensorBoard logs
(tensorboard/, with BN diagnostics), checkpoints/best.keras, metrics.csv and
final_metrics.json, then bn_doctor.json (the BN doctor on the final model). Stop it at
any time; the same command resumes from the last completed epoch.

    python experiments/train.py --model=lenet --bn=custom --epochs=10 \\
        --data_dir=../shared/datasets/tensorflow_datasets --workdir=runs/lenet_custom
    tensorboard --logdir=runs/lenet_custom/tensorboard
"""

from __future__ import annotations

import sys

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

from absl import flags  # noqa: E402

from bn_keras.errors import UserError  # noqa: E402
from bn_keras.train import averaging, checkup, training, workdir  # noqa: E402
from bn_keras.train import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """One flag per TrainConfig field, with its help text, default and bounds."""
    cli.define_config_flags(config_lib.TrainConfig)
    # A terminal gets a progress bar, a log file one line per epoch.
    FLAGS["verbose"].help += " (default: 1 at a terminal, else 2)"
    FLAGS.set_default("verbose", None)


def config_from_flags(f, stdout_is_terminal: bool | None = None) -> config_lib.TrainConfig:
    """The TrainConfig the flags describe (verbosity resolved)."""
    verbose = f.verbose
    if verbose is None:
        terminal = sys.stdout.isatty() if stdout_is_terminal is None else stdout_is_terminal
        verbose = 1 if terminal else 2
    return cli.config_from_flags(config_lib.TrainConfig, f, verbose=verbose)


def main(argv: list[str]) -> None:
    del argv
    config = config_from_flags(FLAGS)
    result = training.run(config)
    if result.diverged:
        raise UserError(f"training diverged (loss NaN/inf in epoch "
                        f"{result.diverged_at_epoch + 1}); lower `learning_rate` or use BN. "
                        f"Results so far: {config.workdir}")
    with_bn = result.bn_statistics is not None
    for name, score in (result.test_variants or {}).items():
        print(f"  test accuracy with {averaging.variant_label(name, with_bn)}: "
              f"{score.test_accuracy:.4f}")
    print(f"test accuracy {result.test_accuracy:.4f}, test loss {result.test_loss:.4f}, "
          f"{result.train_images_per_second:.0f} training images/s; "
          f"results in {config.workdir} (tensorboard --logdir={config.workdir}/tensorboard)")
    doctor = checkup.write_run_checkup(config.workdir)  # a copy of final.keras; capped data
    if doctor:
        print(f"BN doctor ({doctor.seconds:.1f} s): {doctor.diagnosis.summary()}")


def describe_saved() -> str:
    """What an interrupted run has kept, for the Ctrl-C message."""
    return workdir.describe(config_lib.TrainConfig(FLAGS.model, FLAGS.bn,
                                                   workdir=FLAGS.workdir).workdir)


if __name__ == "__main__":
    define_flags()
    cli.run(main, on_interrupt=describe_saved)
