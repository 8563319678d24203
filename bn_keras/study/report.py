"""The BN study's report: `conduct(study)` trains its runs and writes its tables and plots.

    <output_dir>/study_<name>[_quick].md    preamble, summary table, sections, plots
    <output_dir>/study_<name>[_quick].csv   the summary table
    <output_dir>/study_<name>[_quick]*.png  the plots

The summary has one row per arm (bn_keras.study.statistics.summarize). A study
names the sections that follow it (bn_keras.study.experiments); each is a function
of `SECTIONS` that may add columns to the summary, text and plots.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any

from bn_keras import environment, models, tables
from bn_keras.study import evaluation, plots, statistics
from bn_keras.study.experiments import Study
from bn_keras.study.runner import StudyRun, run_dir, run_study
from bn_keras.train import training


@dataclasses.dataclass
class Report:
    """What the sections of one study's report build together."""

    study: Study
    results: list[StudyRun]
    rows: list[dict[str, Any]]  # the summary table, one row per arm
    runs_dir: str  # where the study's runs keep their workdirs
    output_dir: str
    text: list[str] = dataclasses.field(default_factory=list)
    plots: list[str] = dataclasses.field(default_factory=list)

    @property
    def stem(self) -> str:
        return f"study_{self.study.name}" + ("_quick" if self.study.quick else "")

    def path(self, suffix: str) -> str:
        return os.path.join(self.output_dir, f"{self.stem}{suffix}")

    @functools.cached_property
    def epoch_rows(self) -> list[dict[str, Any]]:
        return statistics.per_epoch_rows(self.results)


def loss_curves_section(report: Report) -> None:
    """The mean training loss of every window, one line per arm (a min-max band over seeds)."""
    study = report.study
    report.plots.append(plots.plot_loss_curves(
        report.results, report.path("_loss.png"), f"{study.title or study.name} ({study.mode})"))


def tutorial_check_section(report: Report) -> None:
    """The compare study's questions: parameter counts, the test accuracy after epochs 5
    and 10, and whether the tutorial's network is the no-BN one and Keras' BN is ours."""
    report.text.append(
        f"\nParameters in the forward graph: no BN "
        f"{models.lenet_cifar('none').count_params():,}; tutorial as written "
        f"{models.lenet_tutorial('keras').count_params():,}; with BN wired in "
        f"{models.lenet_cifar('custom').count_params():,}.\n")
    groups = statistics.by_arm(report.results)
    for row in report.rows:
        for epoch in (5, 10):
            if all(len(r.result.test_accuracy_per_epoch) >= epoch for r in groups[row["arm"]]):
                row[f"test_acc_epoch_{epoch}"] = report.epoch_rows[epoch - 1][
                    f"{row['arm']} test acc"]
    if report.study.seeds > 1:
        report.text += [agreement_text(report.results, *pair) for pair in (
            ("keras_bn", "our_bn"), ("no_bn", "tutorial_as_written"))]


def agreement_text(results: list[StudyRun], first: str, second: str) -> str:
    """One paragraph: do two arms agree within seed noise (statistics.agreement)?"""
    a = statistics.agreement(results, first, second)
    if a["identical"]:
        return (f"\n{first} vs {second}: seed for seed, the runs are identical (same test "
                f"accuracies, same loss curves).\n")
    within = "within" if a["accuracy_agrees"] else "beyond"
    return (f"\n{first} vs {second}: final test accuracy differs by "
            f"{a['accuracy_difference']:+.4f}, {within} two standard errors of the difference "
            f"({a['two_standard_errors']:.4f}; a rough seed-noise check, not a significance "
            f"test); the mean loss curves are within the seed range in "
            f"{a['windows_within_seed_range']} of {a['windows']} windows (largest gap "
            f"{a['max_curve_gap']:.4f}).\n")


def per_epoch_section(report: Report) -> None:
    """Epoch by arm: test accuracy after the epoch, mean training loss during it."""
    if report.epoch_rows:
        report.text.append(
            "\nPer epoch (mean ± std over seeds): test accuracy after the epoch, mean "
            "training loss during it.\n\n"
            + tables.markdown_table(report.epoch_rows, list(report.epoch_rows[0])))


def accuracy_vs_section(report: Report) -> None:
    """Final test accuracy against the swept setting (learning rate, batch size)."""
    study = report.study
    report.plots.append(plots.plot_metric_vs(
        report.results, study.sweep, report.path(".png"),
        f"Test accuracy vs {study.sweep} ({study.mode})"))


def batch_statistics_section(report: Report) -> None:
    """Test accuracy when BN normalizes test batches of 500 with their own statistics."""
    base = dataclasses.replace(report.study.base, eval_batch_size=500)
    test = training.make_datasets(base).test
    for row in report.rows:
        accuracies = [evaluation.batch_statistics_accuracy(
            run_dir(report.runs_dir, row["arm"], seed, "final.keras"), test)
            for seed in range(report.study.seeds)]
        row["test_acc_batch_stats"] = statistics.mean_std(accuracies)


def re_estimated_section(report: Report) -> None:
    """Test accuracy once BN's statistics are re-estimated for the final weights: about
    RECALIBRATION_EXAMPLES unaugmented training images, in batches of the run's size."""
    study = report.study
    splits = training.load_splits(study.base)
    arms = {arm.name: arm for arm in study.arms}
    for row in report.rows:
        accuracies: dict[str, list[float]] = {variance: [] for variance in RE_ESTIMATED}
        for seed in range(study.seeds):
            config = arms[row["arm"]].config(study.base, seed, "")
            if config.bn == "none":
                break
            datasets = training.make_datasets(config, splits=splits)
            batches = math.ceil(evaluation.RECALIBRATION_EXAMPLES / config.batch_size)
            for variance in RE_ESTIMATED:
                accuracies[variance].append(evaluation.re_estimated_accuracy(
                    run_dir(report.runs_dir, row["arm"], seed, "final.keras"),
                    datasets.train.epoch(0, augment=False), datasets.test, batches,
                    variance))
        for variance, column in RE_ESTIMATED.items():
            row[column] = (statistics.mean_std(accuracies[variance]) if accuracies[variance]
                           else "-")
    report.text.append(
        f"\n`test_acc_re_estimated`: BN's moving statistics re-estimated for the final weights "
        f"(bn_keras.recalibrate_batch_norm) over the first "
        f"{evaluation.RECALIBRATION_EXAMPLES:,} unaugmented training images of epoch 1's "
        f"order (fewer where the run trained on fewer), in batches of the run's own size, "
        f"the variance as the mean of the batch variances (the default, `variance=\"batch\"`); "
        f"`test_acc_re_estimated_population`: the same with the variance of all the values "
        f"(`variance=\"population\"`, fvcore's convention); '-': no BN.\n")


# recalibrate_batch_norm's variance conventions -> the summary's column for each.
RE_ESTIMATED = {"batch": "test_acc_re_estimated",
                "population": "test_acc_re_estimated_population"}


def gradient_norms_section(report: Report) -> None:
    """Per-layer gradient norms at initialization and after training, and during training."""
    rows = evaluation.gradient_norm_rows(report.runs_dir, report.study.base, report.study.arms)
    report.plots.append(plots.plot_gradient_norms(rows, report.path("_grad_norms.png")))
    report.plots.append(plots.plot_gradient_norms_during_training(
        report.runs_dir, rows, report.path("_grad_norms_training.png")))
    report.text.append("\n" + tables.markdown_table(rows, ["arm", "when", "layer", "grad_norm"]))


SECTIONS: dict[str, Callable[[Report], None]] = {
    "loss_curves": loss_curves_section, "tutorial_check": tutorial_check_section,
    "per_epoch": per_epoch_section, "accuracy_vs": accuracy_vs_section,
    "batch_statistics": batch_statistics_section, "re_estimated": re_estimated_section,
    "gradient_norms": gradient_norms_section}


def runs_dir(study: Study, runs_root: str) -> str:
    """Where the study's runs keep their workdirs (and their cached results)."""
    return os.path.join(runs_root, f"{study.name}_{study.mode}")


def progress(study: Study, runs_root: str) -> str:
    """How far the study has come, in a sentence, for an interrupted user."""
    directory = runs_dir(study, runs_root)
    done = sum(os.path.exists(run_dir(directory, arm.name, seed, "study_result.json"))
               for arm in study.arms for seed in range(study.seeds))
    return (f"{done} of {len(study.arms) * study.seeds} runs of the {study.name} study are "
            f"done in {directory} (the run in progress keeps its completed epochs)")


@dataclasses.dataclass(frozen=True)
class Conducted:
    """A study carried out: its summary table, its runs, where its report went, how long
    it took."""

    rows: list[dict[str, Any]]
    columns: list[str]
    results: list[StudyRun]
    report: str
    wall_seconds: float


def conduct(study: Study, output_dir: str, runs_root: str, command: str) -> Conducted:
    """Trains the study's runs (or reads them back from `runs_root`) and writes its report.

    `command` is the command line the report quotes.
    """
    start = time.perf_counter()
    directory = runs_dir(study, runs_root)
    results = run_study(study.arms, range(study.seeds), study.base, directory,
                        loss_every=study.loss_window)
    report = Report(study, results, statistics.summarize(results), directory, output_dir)
    os.makedirs(output_dir, exist_ok=True)
    for name in study.sections:
        SECTIONS[name](report)
    wall = time.perf_counter() - start
    base = study.base
    columns = list(dict.fromkeys(k for r in report.rows for k in r))
    preamble = (f"# BN study: {study.name} ({study.mode} mode)\n\nCommand: `{command}`\n\n"
                f"Measured on: {environment.summary()}.\n\n"
                f"Base settings: model={base.model}, optimizer={base.optimizer}, "
                f"learning_rate={base.learning_rate}, batch_size={base.batch_size}, "
                f"epochs={base.epochs}, training examples="
                f"{base.train_examples or 45000}, seeds={study.seeds}; real CIFAR-10, test split "
                f"for the accuracies. Wall time of this invocation: {wall:.0f} s "
                f"(cached runs are not re-trained); training and evaluation time summed over "
                f"the {len(results)} runs: {sum(r.wall_seconds for r in results):.0f} s.\n\n")
    body = "".join(f"\n![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in report.plots)
    md, _ = tables.write_table(report.rows, columns, output_dir, report.stem, preamble,
                               postscript="".join(report.text) + body)
    return Conducted(report.rows, columns, results, md, wall)
