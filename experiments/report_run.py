"""Writes a training run's report: command, settings, per-epoch table, curve.

A run stopped before its last epoch is reported as unfinished.

    python experiments/report_run.py --workdir=runs/resnet20_recipe --name=resnet20_recipe \\
        --command="python experiments/train.py ..." --wall_seconds=2890 \\
        --output_dir=experiments/results
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "The run's work directory (an unfinished run is "
                        "reported as such).", required=True)
    flags.DEFINE_string("name", None, "Report name (default: the workdir's name).")
    flags.DEFINE_string("command", None, "The command that ran it, quoted in the report.",
                        required=True)
    flags.DEFINE_float("wall_seconds", None, "Wall time of that whole command.")
    flags.DEFINE_string("notes", "", "A paragraph placed before the per-epoch table.")
    flags.DEFINE_string("export_json", None, "What `experiments/export.py --report_json` "
                        "wrote for the run's SavedModel: adds a Serving section.")
    flags.DEFINE_string("output_dir", "runs/reports",
                        "Where the report goes (experiments/results: the committed ones).")


def main(argv: list[str]) -> None:
    del argv
    import os

    from bn_keras import atomic
    from bn_keras.errors import NotFound
    from bn_keras.train import report

    name = FLAGS.name or os.path.basename(os.path.normpath(FLAGS.workdir))
    export = None
    if FLAGS.export_json:
        export = atomic.read_json(FLAGS.export_json)
        if export is None:
            raise NotFound(f"no export report at {FLAGS.export_json!r}: run experiments/"
                           "export.py with --report_json first.")
    path = report.write(FLAGS.workdir, FLAGS.output_dir, name, FLAGS.command,
                        FLAGS.wall_seconds, FLAGS.notes, export)
    print(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
