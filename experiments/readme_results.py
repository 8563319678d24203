"""Writes README.md's results table from the committed reports, so that no figure there is
typed by hand: each comes from the report (and the JSON beside it) that a command wrote.

    python experiments/readme_results.py           # exit 1 if README.md's table is stale
    python experiments/readme_results.py --write   # rewrite the table in README.md
"""

from __future__ import annotations

import csv
import json
import os
import re

from absl import flags

from bn_keras import cli
from bn_keras.errors import UserError

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on

FLAGS = flags.FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
README = os.path.join(ROOT, "README.md")
BLOCK = re.compile(r"(<!-- results: start[^>]*-->\n)(.*?)(<!-- results: end -->)", re.S)

# (what, report stem): runs reported by experiments/report_run.py (their <stem>.json).
RUNS = [
    ("LeNet, our BN, 10 epochs: the quick start", "lenet_quickstart"),
    ("ResNet-20 recipe without BN, seed 0", "resnet20_recipe_nobn"),
]
# (what, seeds summary stem): experiments/summarize_seeds.py's <stem>.json, mean ± std.
SEEDS = [
    ("ResNet-20 recipe, our BN, 40 epochs (3 seeds; He et al.: 0.9125)",
     "resnet20_recipe_seeds"),
]
# (what, study report stem, arms): arms' final test accuracy, mean ± std over seeds.
STUDIES = [
    ("The tutorial's experiment (LeNet, Adam 1e-4, batch 10, 10 epochs, 3 seeds)",
     "study_compare", ("no_bn", "tutorial_as_written", "keras_bn", "our_bn")),
]


def _link(stem: str) -> str:
    return f"[{stem}.md](experiments/results/{stem}.md)"


def table() -> str:
    """The Markdown table, from the reports in experiments/results."""
    lines = ["| what | test accuracy | report |", "|---|---|---|"]
    for what, stem in RUNS:
        with open(os.path.join(RESULTS, f"{stem}.json")) as f:
            run = json.load(f)
        accuracy = f"{run['test_accuracy']:.4f}"
        if not run["finished"]:
            accuracy += f" (stopped after epoch {run['epochs']})"
        lines.append(f"| {what} | {accuracy} | {_link(stem)} |")
    for what, stem in SEEDS:
        with open(os.path.join(RESULTS, f"{stem}.json")) as f:
            seeds = json.load(f)
        lines.append(f"| {what} | {seeds['test_accuracy_mean']:.4f} ± "
                     f"{seeds['test_accuracy_std']:.4f} | {_link(stem)} |")
    for what, stem, arms in STUDIES:
        with open(os.path.join(RESULTS, f"{stem}.csv")) as f:
            rows = {row["arm"]: row for row in csv.DictReader(f)}
        accuracies = "; ".join(f"{arm} {rows[arm]['final_test_accuracy']}" for arm in arms)
        lines.append(f"| {what} | {accuracies} | {_link(stem)} |")
    return "\n".join(lines) + "\n"


def define_flags() -> None:
    flags.DEFINE_bool("write", False, "Rewrite README.md's results table (default: only "
                      "check that it equals the reports, exit 1 if not).")


def main(argv: list[str]) -> None:
    del argv
    with open(README) as f:
        text = f.read()
    match = BLOCK.search(text)
    if match is None:
        raise UserError("README.md lacks its <!-- results: start --> ... <!-- results: end "
                        "--> block.")
    try:
        wanted = table()
    except FileNotFoundError as e:
        raise UserError(f"a report is missing: {e.filename}") from None
    if FLAGS.write:
        with open(README, "w") as f:
            f.write(text[:match.start(2)] + wanted + text[match.end(2):])
        print("README.md's results table written")
    elif match.group(2) != wanted:
        raise UserError("README.md's results table differs from the reports; run python "
                        "experiments/readme_results.py --write")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
