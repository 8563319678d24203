"""What a study's runs show, in numbers: mean ± std over seeds, per arm and per epoch, and
whether two arms agree within seed noise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bn_keras.study.runner import StudyRun
from bn_keras.tables import mean_std


def epochs_to_reach(accuracies: Sequence[float], threshold: float) -> int | None:
    """1-based epoch at which test accuracy first reaches `threshold` (None: never)."""
    for epoch, accuracy in enumerate(accuracies, start=1):
        if accuracy >= threshold:
            return epoch
    return None


def by_arm(results: Sequence[StudyRun]) -> dict[str, list[StudyRun]]:
    """The runs of each arm, arms in the order they first appear."""
    groups: dict[str, list[StudyRun]] = {}
    for r in results:
        groups.setdefault(r.arm, []).append(r)
    return groups


def summarize(results: Sequence[StudyRun], thresholds: Sequence[float] = (0.4, 0.5)
              ) -> list[dict]:
    """One row per arm: final/best test accuracy (mean ± std over seeds), epochs to thresholds."""
    rows = []
    for name, runs in by_arm(results).items():
        results_ = [r.result for r in runs]
        row = {"arm": name, "seeds": len(runs),
               "final_test_accuracy": mean_std([r.test_accuracy for r in results_]),
               "best_test_accuracy": mean_std(
                   [max(r.test_accuracy_per_epoch or [r.test_accuracy]) for r in results_]),
               "final_train_loss": mean_std(
                   [r.loss_curve[-1].loss if r.loss_curve else None for r in results_]),
               "diverged_runs": sum(r.diverged for r in results_),
               "train_images_per_s": mean_std([r.train_images_per_second for r in results_],
                                              digits=0)}
        for t in thresholds:
            reached = [epochs_to_reach(r.test_accuracy_per_epoch, t) for r in results_]
            row[f"epochs_to_{int(t * 100)}%"] = (
                "never" if all(e is None for e in reached) else
                ", ".join("-" if e is None else str(e) for e in reached))
        rows.append(row)
    return rows


def per_epoch_rows(results: Sequence[StudyRun]) -> list[dict]:
    """Epoch x arm: test accuracy after the epoch and mean training loss during it (mean ± std).

    The loss is the mean of the epoch's loss windows, the tutorial's printed numbers
    averaged per epoch.
    """
    groups = by_arm(results)
    epochs = max((len(r.result.test_accuracy_per_epoch) for r in results), default=0)
    rows = []
    for epoch in range(1, epochs + 1):
        row: dict[str, Any] = {"epoch": epoch}
        for name, runs in groups.items():
            per_epoch = [r.result.test_accuracy_per_epoch for r in runs]
            row[f"{name} test acc"] = mean_std([
                accuracies[epoch - 1] if len(accuracies) >= epoch else None
                for accuracies in per_epoch])
            windows = [[p.loss for p in r.result.loss_curve if p.epoch == epoch] for r in runs]
            row[f"{name} train loss"] = mean_std([float(np.mean(w)) if w else None
                                                  for w in windows])
        rows.append(row)
    return rows


def agreement(results: Sequence[StudyRun], first: str, second: str) -> dict[str, Any]:
    """Do two arms agree within seed noise? Final test accuracy and loss curves compared.

    A rough noise check, not a significance test (3 seeds are too few for one): the
    accuracies agree when their means differ by at most two standard errors of the
    difference; the curves, window by window, when the mean curves differ by at most
    the larger of the two arms' seed ranges. Curves are cut to the shortest run.
    """
    groups = by_arm(results)
    runs = {n: groups.get(n, []) for n in (first, second)}
    a, b = (np.array([r.result.test_accuracy for r in runs[n]]) for n in (first, second))
    difference = float(a.mean() - b.mean())
    two_se = (float(2 * np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
              if min(len(a), len(b)) > 1 else float("nan"))
    curves = {n: [np.asarray([p.loss for p in r.result.loss_curve], dtype=float)
                  for r in runs[n]] for n in runs}
    length = min(len(c) for n in curves for c in curves[n])
    stacked = [np.stack([c[:length] for c in curves[n]]) for n in (first, second)]
    identical = bool(np.array_equal(a, b) and all(
        len(x) == len(y) and np.array_equal(x, y)
        for x, y in zip(curves[first], curves[second], strict=False))
        and all(x.result.test_accuracy_per_epoch == y.result.test_accuracy_per_epoch
                for x, y in zip(runs[first], runs[second], strict=False)))
    gap = np.abs(stacked[0].mean(0) - stacked[1].mean(0))
    spread = np.maximum(np.ptp(stacked[0], axis=0), np.ptp(stacked[1], axis=0))
    return {"accuracy_difference": difference, "two_standard_errors": two_se,
            "accuracy_agrees": identical or abs(difference) <= two_se,
            "windows": length, "windows_within_seed_range": int(np.sum(gap <= spread)),
            "max_curve_gap": (float(np.nanmax(gap)) if np.any(np.isfinite(gap))
                              else float("nan")),  # NaN: no finite window (diverged runs)
            "identical": identical}
