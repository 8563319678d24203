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
from bn_keras.models.options import BATCH_NORMS
from bn_keras.study import evaluation, plots, statistics
from bn_keras.study.experiments import Study
from bn_keras.study.runner import Arm, StudyRun, run_dir, run_study
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
    arms = {arm.name: arm for arm in report.study.arms}
    for row in report.rows:
        if arms[row["arm"]].config(base, 0, "").bn not in BATCH_NORMS:
            row["test_acc_batch_stats"] = "-"  # no batch statistics to normalize with
            continue
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
            if config.bn not in BATCH_NORMS:
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


def normalization_batch_section(report: Report) -> None:
    """Final test accuracy against the number of examples BN normalizes together (its
    groups, at a fixed SGD batch), the batch-independent arms as levels."""
    study = report.study
    report.plots.append(plots.plot_normalization_batch(
        report.results, {arm.name: dict(arm.overrides) for arm in study.arms},
        study.base.batch_size, report.path(".png"),
        f"Test accuracy vs BN's normalization batch, SGD batch {study.base.batch_size} "
        f"({study.mode})"))
    report.text.append(
        f"\nEvery arm trains LeNet with the same SGD batch ({study.base.batch_size}), "
        f"optimizer and steps; only the normalization differs. `ghost_bn_k`: our BN "
        f"normalizing consecutive groups of k examples of each batch (Ghost BN, "
        f"`virtual_batch_size=k`), `bn_{study.base.batch_size}` the whole batch; "
        f"`group_norm`: keras.layers.GroupNormalization with "
        f"{models.GROUP_NORM_GROUPS} groups (dividing every width, 6, 16, 120, 84) in "
        f"each BN's place; `layer_norm`: keras.layers.LayerNormalization over all non-batch "
        f"axes (Keras' default is the last axis only; its gamma and beta are then per "
        f"position and channel: "
        f"{models.build_model('lenet', 'layer_norm').count_params():,} parameters against "
        f"{models.build_model('lenet', 'group_norm').count_params():,} for GroupNorm); "
        f"`no_norm`: none. The convolutions and dense layers before a normalization have "
        f"no bias in every normalized arm, as with BN.\n")


def small_batch_section(report: Report) -> None:
    """The true small batches: SGD batch SMALL_BATCH for BN, GroupNorm, LayerNorm and no
    normalization, each arm's learning rate chosen on the validation split (seed 0) from a
    grid, then trained with every seed; a table of its own."""
    from bn_keras.study import experiments

    study = report.study
    base = dataclasses.replace(study.base, batch_size=experiments.SMALL_BATCH,
                               steps_per_execution=None, log_every_n_steps=500)
    small_dir = os.path.join(report.runs_dir, f"batch_{experiments.SMALL_BATCH}")
    # Quick: one learning rate, no choice to make.
    rates = experiments.SMALL_BATCH_LEARNING_RATES[-1:] if study.quick else \
        experiments.SMALL_BATCH_LEARNING_RATES
    candidates = [Arm(f"{name}@lr{rate:g}", bn=bn, learning_rate=rate)
                  for name, bn in experiments.SMALL_BATCH_ARMS for rate in rates]
    selection = run_study(candidates, [0], base, small_dir, loss_every=500)
    by_name = {run.arm: run.result for run in selection}
    rows, chosen = [], []
    for name, _ in experiments.SMALL_BATCH_ARMS:
        scores = {rate: by_name[f"{name}@lr{rate:g}"].best_val_accuracy or 0.0
                  for rate in rates}
        best = max(scores, key=lambda rate: scores[rate])
        chosen.append(next(a for a in candidates if a.name == f"{name}@lr{best:g}"))
        rows.append({"arm": name, **{f"val_acc lr={rate:g}": f"{scores[rate]:.4f}"
                                     for rate in scores}, "chosen_lr": f"{best:g}"})
    finals = run_study(chosen, range(study.seeds), base, small_dir, loss_every=500)
    summary = {row["arm"]: row for row in statistics.summarize(finals)}
    for row, arm in zip(rows, chosen, strict=True):
        row["final_test_accuracy"] = summary[arm.name]["final_test_accuracy"]
        row["seeds"] = summary[arm.name]["seeds"]
    report.text.append(
        f"\n## True small batches: SGD batch {experiments.SMALL_BATCH}\n\n"
        f"The same network and epochs at SGD batch {experiments.SMALL_BATCH} (so "
        f"{study.base.batch_size // experiments.SMALL_BATCH}x the steps), each arm's "
        f"learning rate chosen on the validation split with seed 0 (the "
        f"best validation accuracy of any epoch) from "
        f"{', '.join(f'{r:g}' for r in rates)}, then "
        f"trained with {study.seeds} seed(s) (the selection run is seed 0's); BN here "
        f"normalizes the whole batch of {experiments.SMALL_BATCH}.\n\n"
        + tables.markdown_table(rows, list(rows[0])))
    report.results = report.results + finals + [run for run in selection
                                                if run.arm not in {a.name for a in chosen}]


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
    "normalization_batch": normalization_batch_section, "small_batch": small_batch_section,
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


COLUMNS_TEXT = (
    "\nColumns: mean ± sample standard deviation over seeds. `final_test_accuracy`: after the "
    "last epoch, with BN's moving statistics; `best_test_accuracy`: the best of any epoch "
    "(measured after every epoch, chosen by nothing); `final_train_loss`: the mean training "
    "loss of the last loss window (the tutorial's last printed number), not the last epoch's "
    "mean (the per-epoch table has that); `train_images_per_s`: the median epoch after the "
    "first, while other work may have shared the machine; `epochs_to_X%`: per seed, the "
    "first epoch whose test accuracy reached X ('-': that seed never did; 'never': no seed "
    "did).\n")


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
                f"the {len(report.results)} runs: "
                f"{sum(r.wall_seconds for r in report.results):.0f} s.\n\n")
    body = "".join(f"\n![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in report.plots)
    report.text.insert(0, COLUMNS_TEXT)
    md, _ = tables.write_table(report.rows, columns, output_dir, report.stem, preamble,
                               postscript="".join(report.text) + body)
    return Conducted(report.rows, columns, report.results, md, wall)
