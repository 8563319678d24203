"""The BN study: arms x seeds of training runs, their curves, summaries, plots and HParams.

An `Arm` is a named set of TrainConfig overrides (no BN, Keras' BN, ours, ...).
`run_study` trains every arm with every seed through `bn_keras.training.run`,
recording the mean training loss every N mini-batches and the test accuracy
after every epoch, and writes one JSON per finished run, so an interrupted
study resumes where it stopped. `summarize` turns the runs into mean +- std
rows; `plot_*` draw them with matplotlib.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from bn_keras import training

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One configuration of the study: a name and the TrainConfig fields it changes."""

    name: str
    overrides: tuple[tuple[str, Any], ...] = ()

    def config(self, base: training.TrainConfig, seed: int, workdir: str) -> training.TrainConfig:
        return dataclasses.replace(base, **dict(self.overrides), seed=seed, workdir=workdir)


def arm(name: str, **overrides: Any) -> Arm:
    return Arm(name, tuple(sorted(overrides.items())))


class _EpochLog(keras.callbacks.Callback):
    """A per-epoch record kept in a JSON file, so a run resumed by BackupAndRestore keeps
    what the epochs before the interruption recorded (and drops the unfinished epoch's)."""

    def __init__(self, path: str | None):
        super().__init__()
        self.path = path
        self.records: list = []
        if path and os.path.exists(path):
            with open(path) as f:
                self.records = json.load(f)

    def _keep_epochs_before(self, epoch: int) -> None:
        self.records = [r for r in self.records if r[-1] <= epoch]  # r[-1]: 1-based epoch

    def _save(self) -> None:
        if self.path:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.records, f)
            os.replace(tmp, self.path)


class LossEveryN(_EpochLog):
    """Mean training loss over each window of `n` mini-batches, as the tutorial printed it.

    `points` holds (global mini-batch, window mean, 1-based epoch). Windows restart every
    epoch, like the tutorial's running loss; an epoch's tail shorter than `n` is not
    reported. With `steps_per_execution` k > 1 Keras reports every k-th step only; a
    window then ends at the first report at or after `n` steps (k dividing `n` gives
    windows of exactly `n`). The running mean Keras reports weights batches by size, so
    a window holding an epoch's short last batch is slightly approximate.
    """

    def __init__(self, n: int, path: str | None = None):
        super().__init__(path)
        self.n = n
        self._step = 0

    @property
    def points(self) -> list:
        return self.records

    def on_epoch_begin(self, epoch, logs=None):
        self._keep_epochs_before(epoch)
        if self.params and self.params.get("steps"):
            self._step = epoch * self.params["steps"]
        self._epoch = epoch + 1
        self._epoch_sum, self._epoch_steps = 0.0, 0
        self._window_sum, self._window_count = 0.0, 0

    def on_train_batch_end(self, batch, logs=None):
        # Keras reports the running mean over the epoch so far; recover the sum of the
        # losses of the steps since its last report.
        steps = training.steps_done(self.params, batch)
        epoch_sum = float(logs["loss"]) * steps
        self._window_sum += epoch_sum - self._epoch_sum
        self._window_count += steps - self._epoch_steps
        self._step += steps - self._epoch_steps
        self._epoch_sum, self._epoch_steps = epoch_sum, steps
        if self._window_count >= self.n:
            self.records.append((self._step, self._window_sum / self._window_count, self._epoch))
            self._window_sum, self._window_count = 0.0, 0

    def on_epoch_end(self, epoch, logs=None):
        self._save()


class EvaluateEachEpoch(_EpochLog):
    """Test accuracy after every epoch (the tutorial's per-epoch test figure)."""

    def __init__(self, dataset: tf.data.Dataset, path: str | None = None):
        super().__init__(path)
        self.dataset = dataset

    @property
    def accuracy(self) -> list[float]:
        return [accuracy for accuracy, _ in self.records]

    def on_epoch_begin(self, epoch, logs=None):
        self._keep_epochs_before(epoch)

    def on_epoch_end(self, epoch, logs=None):
        _, accuracy = self.model.evaluate(self.dataset, verbose=0)
        self.records.append((float(accuracy), epoch + 1))
        self._save()
        log.info("  epoch %d/%s: test accuracy %.4f", epoch + 1, self.params.get("epochs", "?"),
                 accuracy)


def run_study(arms: Sequence[Arm], seeds: Sequence[int], base: training.TrainConfig,
              study_dir: str, loss_every: int = 500) -> list[dict[str, Any]]:
    """Trains every arm with every seed; returns one result dict per run (cached on disk)."""
    results = []
    total = len(arms) * len(seeds)
    for i, (a, seed) in enumerate(((a, s) for a in arms for s in seeds), start=1):
        run_dir = os.path.join(study_dir, f"{a.name}_seed{seed}")
        result_path = os.path.join(run_dir, "study_result.json")
        config = a.config(base, seed, run_dir)
        config.validate()
        if os.path.exists(result_path):
            with open(result_path) as f:
                cached = json.load(f)
            if cached.get("config") != dataclasses.asdict(config):
                raise ValueError(f"{run_dir} holds a result of other settings; remove it or "
                                 "choose another --runs_dir.")
            results.append(cached)
            log.info("[%d/%d] %s seed %d: done earlier", i, total, a.name, seed)
            continue
        log.info("[%d/%d] %s seed %d", i, total, a.name, seed)
        datasets = training.make_datasets(config, config.batch_size, drop_remainder=False)
        loss_cb = LossEveryN(loss_every, os.path.join(run_dir, "loss_curve.json"))
        acc_cb = EvaluateEachEpoch(datasets["test"], os.path.join(run_dir, "test_accuracy.json"))
        start = time.perf_counter()
        metrics = training.run(config, datasets_override=datasets,
                               extra_callbacks=[loss_cb, acc_cb])
        result = {"arm": a.name, "seed": seed, "overrides": dict(a.overrides),
                  "config": dataclasses.asdict(config), **metrics,
                  "wall_seconds": time.perf_counter() - start, "loss_curve": loss_cb.points,
                  "test_accuracy_per_epoch": acc_cb.accuracy}
        write_hparams(os.path.join(run_dir, "tensorboard", "hparams"), a, config, result)
        with open(result_path, "w") as f:
            json.dump(result, f, indent=1)
        results.append(result)
    return results


def write_hparams(logdir: str, a: Arm, config: training.TrainConfig, result: dict) -> None:
    """One HParams-dashboard entry: the run's settings and its final metrics."""
    from tensorboard.plugins.hparams import api as hp

    hparams = {"arm": a.name, "bn": config.bn, "model": config.model,
               "optimizer": config.optimizer, "learning_rate": config.learning_rate,
               "batch_size": config.batch_size, "bn_momentum": config.bn_momentum,
               "bn_placement": config.bn_placement, "seed": config.seed,
               "virtual_batch_size": config.virtual_batch_size or 0, "renorm": config.renorm}
    with tf.summary.create_file_writer(logdir).as_default():
        hp.hparams(hparams)
        tf.summary.scalar("test_accuracy", result["test_accuracy"], step=0)
        tf.summary.scalar("test_loss", result["test_loss"], step=0)
        best = max(result["test_accuracy_per_epoch"] or [result["test_accuracy"]])
        tf.summary.scalar("best_test_accuracy", best, step=0)


def epochs_to_reach(accuracies: Sequence[float], threshold: float) -> int | None:
    """1-based epoch at which test accuracy first reaches `threshold` (None: never)."""
    for epoch, accuracy in enumerate(accuracies, start=1):
        if accuracy >= threshold:
            return epoch
    return None


def mean_std(values: Sequence[float]) -> str:
    """'mean ± sample std' of the finite values; '(n=k)' when some were NaN or missing."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return "-"
    text = (f"{np.mean(finite):.4f} ± {np.std(finite, ddof=1):.4f}" if len(finite) > 1
            else f"{finite[0]:.4f}")
    return text + (f" (n={len(finite)})" if len(finite) < len(values) else "")


def by_arm(results: Sequence[dict]) -> dict[str, list[dict]]:
    """The runs of each arm, arms in the order they first appear."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["arm"], []).append(r)
    return groups


def summarize(results: Sequence[dict], thresholds: Sequence[float] = (0.4, 0.5)) -> list[dict]:
    """One row per arm: final/best test accuracy (mean ± std over seeds), epochs to thresholds."""
    rows = []
    for name, runs in by_arm(results).items():
        row = {"arm": name, "seeds": len(runs),
               "final_test_accuracy": mean_std([r["test_accuracy"] for r in runs]),
               "best_test_accuracy": mean_std(
                   [max(r["test_accuracy_per_epoch"] or [r["test_accuracy"]]) for r in runs]),
               "final_train_loss": mean_std(
                   [r["loss_curve"][-1][1] if r["loss_curve"] else None for r in runs]),
               "diverged_runs": sum(bool(r["diverged"]) for r in runs),
               "train_images_per_s": mean_std([r["train_images_per_second"] for r in runs])}
        for t in thresholds:
            reached = [epochs_to_reach(r["test_accuracy_per_epoch"], t) for r in runs]
            row[f"epochs_to_{int(t * 100)}%"] = (
                "never" if all(e is None for e in reached) else
                ", ".join("-" if e is None else str(e) for e in reached))
        rows.append(row)
    return rows


def per_epoch_rows(results: Sequence[dict]) -> list[dict]:
    """Epoch x arm: test accuracy after the epoch and mean training loss during it (mean ± std).

    The loss is the mean of the epoch's loss windows, the tutorial's printed numbers
    averaged per epoch.
    """
    groups = by_arm(results)
    epochs = max((len(r["test_accuracy_per_epoch"]) for r in results), default=0)
    rows = []
    for epoch in range(1, epochs + 1):
        row: dict[str, Any] = {"epoch": epoch}
        for name, runs in groups.items():
            row[f"{name} test acc"] = mean_std([
                r["test_accuracy_per_epoch"][epoch - 1] if len(r["test_accuracy_per_epoch"])
                >= epoch else None for r in runs])
            windows = [[p[1] for p in r["loss_curve"] if p[2] == epoch] for r in runs]
            row[f"{name} train loss"] = mean_std([float(np.mean(w)) if w else None
                                                  for w in windows])
        rows.append(row)
    return rows


def agreement(results: Sequence[dict], first: str, second: str) -> dict[str, Any]:
    """Do two arms agree within seed noise? Final test accuracy and loss curves compared.

    A rough noise check, not a significance test (3 seeds are too few for one): the
    accuracies agree when their means differ by at most two standard errors of the
    difference; the curves, window by window, when the mean curves differ by at most
    the larger of the two arms' seed ranges. Curves are cut to the shortest run.
    """
    groups = by_arm(results)
    runs = {n: groups.get(n, []) for n in (first, second)}
    a, b = (np.array([r["test_accuracy"] for r in runs[n]]) for n in (first, second))
    difference = float(a.mean() - b.mean())
    two_se = (float(2 * np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
              if min(len(a), len(b)) > 1 else float("nan"))
    curves = {n: [np.asarray([p[1] for p in r["loss_curve"]], dtype=float) for r in runs[n]]
              for n in runs}
    length = min(len(c) for n in curves for c in curves[n])
    stacked = [np.stack([c[:length] for c in curves[n]]) for n in (first, second)]
    identical = bool(np.array_equal(a, b) and all(
        len(x) == len(y) and np.array_equal(x, y) for x, y in zip(curves[first], curves[second]))
        and all(x["test_accuracy_per_epoch"] == y["test_accuracy_per_epoch"]
                for x, y in zip(runs[first], runs[second])))
    gap = np.abs(stacked[0].mean(0) - stacked[1].mean(0))
    spread = np.maximum(np.ptp(stacked[0], axis=0), np.ptp(stacked[1], axis=0))
    return {"accuracy_difference": difference, "two_standard_errors": two_se,
            "accuracy_agrees": identical or abs(difference) <= two_se,
            "windows": length, "windows_within_seed_range": int(np.sum(gap <= spread)),
            "max_curve_gap": float(np.nanmax(gap)) if length else float("nan"),
            "identical": identical}


def axes():
    """A matplotlib figure and axes, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4.5))


def save_figure(fig, ax, path: str, title: str, xlabel: str, ylabel: str) -> str:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_loss_curves(results: Sequence[dict], path: str, title: str) -> str:
    """Mean training loss per window, one line per arm with a min-max band over seeds."""
    fig, ax = axes()
    groups = by_arm(results)
    # Arms that train alike draw on top of each other: a line style each keeps them visible.
    for (name, runs), style in zip(groups.items(), ("-", "--", "-.", ":") * len(groups)):
        curves = [np.asarray(r["loss_curve"]) for r in runs if r["loss_curve"]]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        steps = curves[0][:length, 0]
        losses = np.stack([c[:length, 1] for c in curves])
        ax.plot(steps, losses.mean(0), style, linewidth=1.2,
                label=f"{name} ({len(curves)} seeds)")
        ax.fill_between(steps, losses.min(0), losses.max(0), alpha=0.2)
    return save_figure(fig, ax, path, title, "mini-batch", "mean training loss of the window")


def plot_metric_vs(results: Sequence[dict], x_key: str, path: str, title: str,
                   log_x: bool = True) -> str:
    """Final test accuracy against an override (learning rate, batch size), one line per arm family."""
    fig, ax = axes()
    families: dict[str, dict[float, list[float]]] = {}
    for r in results:
        family = r["arm"].rsplit("@", 1)[0]
        accuracy = 0.1 if r["diverged"] else r["test_accuracy"]  # a diverged net is at chance
        families.setdefault(family, {}).setdefault(r["overrides"][x_key], []).append(accuracy)
    for family, points in families.items():
        xs = sorted(points)
        means = [np.mean(points[x]) for x in xs]
        stds = [np.std(points[x], ddof=1) if len(points[x]) > 1 else 0.0 for x in xs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=family)
    if log_x:
        ax.set_xscale("log", base=2 if x_key == "batch_size" else 10)
    return save_figure(fig, ax, path, title, x_key, "test accuracy (diverged = 0.1, chance)")
