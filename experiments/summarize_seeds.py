"""One recipe over several seeds: a table of each seed's report and their mean ± std.

Reads the runs' reports that experiments/report_run.py wrote (<stem>.json and .csv) and
writes <name>.md and <name>.json beside them, checked against a target test accuracy and
a time limit per seed.

    python experiments/summarize_seeds.py --output_dir=experiments/results \\
        --reports=resnet20_recipe,resnet20_recipe_seed1,resnet20_recipe_seed2 \\
        --name=resnet20_recipe_seeds --title="ResNet-20 recipe, three seeds" \\
        --target=0.9125 --max_minutes=60
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("reports", None, "The runs' report names (stems), one per seed.",
                      required=True)
    flags.DEFINE_string("name", None, "The summary's name.", required=True)
    flags.DEFINE_string("title", "Seeds", "Its heading.")
    flags.DEFINE_float("target", None, "The target mean test accuracy.", required=True)
    flags.DEFINE_float("max_minutes", 60.0, "The time limit per seed, in minutes.")
    flags.DEFINE_string("notes", "", "A paragraph before the table.")
    flags.DEFINE_string("output_dir", "experiments/results",
                        "Where the reports are, and the summary goes.")


def main(argv: list[str]) -> None:
    del argv
    from bn_keras.train import report

    path = report.write_seeds(FLAGS.output_dir, FLAGS.reports, FLAGS.name, FLAGS.title,
                              FLAGS.target, FLAGS.max_minutes, FLAGS.notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
