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


class LossEveryN(keras.callbacks.Callback):
    """Mean training loss over each window of `n` mini-batches, as the tutorial printed it.

    Works with `steps_per_execution` k > 1 too (Keras then reports every k-th step):
    windows end on the first report at or after each multiple of `n` steps, so choose
    k dividing `n` for windows of exactly `n`.
    """

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.points: list[tuple[int, float]] = []  # (global mini-batch, mean loss of the window)
        self._step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_sum, self._epoch_steps = 0.0, 0
        self._window_sum, self._window_count = 0.0, 0

    def on_train_batch_end(self, batch, logs=None):
        # Keras reports the running mean over the epoch so far (after batch + 1 steps);
        # recover the sum of the losses of the steps since the last report.
        steps = batch + 1
        epoch_sum = float(logs["loss"]) * steps
        self._window_sum += epoch_sum - self._epoch_sum
        self._window_count += steps - self._epoch_steps
        self._step += steps - self._epoch_steps
        self._epoch_sum, self._epoch_steps = epoch_sum, steps
        if self._window_count >= self.n:
            self.points.append((self._step, self._window_sum / self._window_count))
            self._window_sum, self._window_count = 0.0, 0


class EvaluateEachEpoch(keras.callbacks.Callback):
    """Test accuracy after every epoch (the tutorial's per-epoch test figure)."""

    def __init__(self, dataset: tf.data.Dataset):
        super().__init__()
        self.dataset = dataset
        self.accuracy: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        _, accuracy = self.model.evaluate(self.dataset, verbose=0)
        self.accuracy.append(float(accuracy))


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
        loss_cb, acc_cb = LossEveryN(loss_every), EvaluateEachEpoch(datasets["test"])
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
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "-"
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def summarize(results: Sequence[dict], thresholds: Sequence[float] = (0.4, 0.5)) -> list[dict]:
    """One row per arm: final/best test accuracy (mean ± std over seeds), epochs to thresholds."""
    rows = []
    for name in dict.fromkeys(r["arm"] for r in results):
        runs = [r for r in results if r["arm"] == name]
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
    for name in dict.fromkeys(r["arm"] for r in results):
        curves = [np.asarray(r["loss_curve"]) for r in results if r["arm"] == name
                  and r["loss_curve"]]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        steps = curves[0][:length, 0]
        losses = np.stack([c[:length, 1] for c in curves])
        ax.plot(steps, losses.mean(0), label=f"{name} ({len(curves)} seeds)")
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
        stds = [np.std(points[x]) for x in xs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=family)
    if log_x:
        ax.set_xscale("log", base=2 if x_key == "batch_size" else 10)
    return save_figure(fig, ax, path, title, x_key, "test accuracy (diverged = 0.1, chance)")
