"""keras-tuner search over BN on/off, BN momentum, learning rate, batch size and optimizer.

Tunes on the validation split (train[45000:]), never on test; logs every trial to
TensorBoard's HParams dashboard; writes a summary table; retrains the best
configuration and evaluates it on the test split.

    python experiments/tune.py --tuner=hyperband --max_epochs=9 \\
        --data_dir=../shared/datasets/tensorflow_datasets
    tensorboard --logdir=runs/tune/tensorboard      # HPARAMS tab
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_enum("tuner", "hyperband", ["hyperband", "bayesian", "random"], "Search.")
    flags.DEFINE_enum("model", "lenet", ["lenet", "resnet20"], "Network.")
    flags.DEFINE_enum("dataset", "cifar10", ["cifar10", "synthetic"], "Data.")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR).")
    flags.DEFINE_integer("max_trials", 10, "Trials (bayesian, random).", lower_bound=1)
    flags.DEFINE_integer("max_epochs", 9, "Epochs per trial (Hyperband: the most).",
                         lower_bound=1)
    flags.DEFINE_integer("train_examples", None, "Tune on the first N training examples.",
                         lower_bound=1)
    flags.DEFINE_integer("synthetic_examples", 512, "Size of --dataset=synthetic.", lower_bound=1)
    flags.DEFINE_string("workdir", "runs/tune", "Tuner state, TensorBoard logs, retrained model.")
    flags.DEFINE_string("output_dir", "runs/tune/reports",
                        "Where the summary table goes (experiments/results: the committed one).")
    flags.DEFINE_integer("seed", 0, "Search seed.")


class Tuned(NamedTuple):
    """A search's trials (best first), its best configuration retrained, its report."""

    rows: list[dict]
    best: Any  # bn_keras.study.tuning.Retrained
    report: str


def run(tuner_kind, model, dataset, data_dir, max_trials, max_epochs, train_examples,
        synthetic_examples, workdir, output_dir, seed) -> Tuned:
    from bn_keras import tables
    from bn_keras.locking import DirectoryLock
    from bn_keras.study import tuning
    from bn_keras.train import training
    from bn_keras.train.config import TrainConfig

    base = TrainConfig(model=model, dataset=dataset, data_dir=data_dir, download=False,
                       train_examples=train_examples, synthetic_examples=synthetic_examples,
                       verbose=0, seed=seed)
    base.validate()
    with DirectoryLock(workdir, "tuner workdir", "`workdir`"):
        training.set_seed(seed, deterministic=False)
        tuner = tuning.make_tuner(tuner_kind, base, workdir, max_trials, max_epochs, seed)
        rows = tuning.search(tuner, max_epochs, os.path.join(workdir, "tensorboard"))
        best = tuning.retrain_best(tuner, workdir, max_epochs)
    columns = ["trial", "val_accuracy", "bn", "bn_momentum", "learning_rate", "optimizer",
               "batch_size"] + [c for c in ("tuner/epochs",) if any(c in r for r in rows)]
    preamble = (f"# Hyperparameter search ({tuner_kind}, {model}, {dataset})\n\n"
                f"Command: `python experiments/tune.py {' '.join(sys.argv[1:])}`\n\n"
                "Tuned on the validation split. Best configuration, retrained and evaluated "
                f"on the test split: `{json.dumps(best.hyperparameters)}` -> test accuracy "
                f"**{best.result.test_accuracy:.4f}**.\n\n")
    md, _ = tables.write_table(rows, columns, output_dir, f"tune_{tuner_kind}_{model}_{dataset}",
                               preamble)
    print(tables.markdown_table(rows, columns))
    print(f"best: {best.hyperparameters} -> test accuracy {best.result.test_accuracy:.4f}; "
          f"wrote {md}; TensorBoard HParams: tensorboard --logdir={workdir}/tensorboard")
    return Tuned(rows, best, md)


def main(argv):
    del argv
    run(FLAGS.tuner, FLAGS.model, FLAGS.dataset, FLAGS.data_dir, FLAGS.max_trials,
        FLAGS.max_epochs, FLAGS.train_examples, FLAGS.synthetic_examples, FLAGS.workdir,
        FLAGS.output_dir, FLAGS.seed)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
