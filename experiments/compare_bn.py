"""The BN study on the real CIFAR-10: the tutorial's experiment done right, and its extensions.

--study picks one experiment of bn_keras.study.experiments (each arm trained with --seeds seeds):

  compare    the tutorial's setting: LeNet, Adam lr 1e-4, batch 10, mean training loss every
             500 mini-batches, test accuracy per epoch; arms: no BN, the tutorial's network as
             written (BN built, never called), Keras' BN, ours.
  lr         SGD (momentum 0.9) over learning rates 1e-3 .. 1, with and without BN.
  batch      batch sizes 2 .. 256: no BN, BN, Ghost BN (virtual_batch_size), batch renorm.
  depth      ResNet-20 with and without BN; per-layer gradient norms at init and after training.
  placement  BN before vs after the ReLU.
  momentum   BN momentum 0.9 vs 0.99; test accuracy with moving vs batch statistics.

--quick runs a reduced version (2-9 minutes each on 2 cores); the full one trains on all
45,000 training images (up to about 2 hours). The report (study_<name>[_quick].md, its CSV
and PNG plots) goes to --output_dir, runs/study/reports unless you say otherwise; the
committed reports are updated with --output_dir=experiments/results. Runs are cached under
--runs_dir: rerunning the same command resumes an interrupted study.
TensorBoard: --logdir=<runs_dir> (HParams tab).

    python experiments/compare_bn.py --study=compare --quick \\
        --data_dir=../shared/datasets/tensorflow_datasets
"""

from __future__ import annotations

import sys

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

from absl import flags  # noqa: E402

from bn_keras import tables  # noqa: E402
from bn_keras.study import experiments, report  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_enum("study", "compare", list(experiments.STUDIES), "Which experiment to run.")
    flags.DEFINE_bool("quick", False, "Reduced version (2-9 minutes on 2 cores).")
    flags.DEFINE_integer("seeds", None, "Seeds per arm (default: the study's, 3).",
                         lower_bound=1)
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR).")
    flags.DEFINE_string("output_dir", "runs/study/reports",
                        "Where the report and plots go (experiments/results: the committed ones).")
    flags.DEFINE_string("runs_dir", "runs/study", "Where each run's workdir goes (cached).")


def selected_study() -> experiments.Study:
    return experiments.get(FLAGS.study, FLAGS.quick, FLAGS.data_dir, FLAGS.seeds)


def main(argv: list[str]) -> None:
    del argv
    command = "python experiments/compare_bn.py " + " ".join(sys.argv[1:])
    out = report.conduct(selected_study(), FLAGS.output_dir, FLAGS.runs_dir, command)
    print(tables.markdown_table(out.rows, out.columns))
    print(f"wrote {out.report} ({out.wall_seconds:.0f} s); TensorBoard: "
          f"tensorboard --logdir={report.runs_dir(selected_study(), FLAGS.runs_dir)}")


if __name__ == "__main__":
    define_flags()
    cli.run(main, on_interrupt=lambda: report.progress(selected_study(), FLAGS.runs_dir))
