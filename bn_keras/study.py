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
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from bn_keras import atomic, training
from bn_keras.config import TrainConfig
from bn_keras.workdir import Workdir

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One configuration of the study: a name and the TrainConfig fields it changes."""

    name: str
    overrides: tuple[tuple[str, Any], ...] = ()

    def config(self, base: TrainConfig, seed: int, workdir: str) -> TrainConfig:
        return dataclasses.replace(base, **dict(self.overrides), seed=seed, workdir=workdir)


def arm(name: str, **overrides: Any) -> Arm:
    return Arm(name, tuple(sorted(overrides.items())))


def run_study(arms: Sequence[Arm], seeds: Sequence[int], base: TrainConfig,
              study_dir: str, loss_every: int = 500) -> list[dict[str, Any]]:
    """Trains every arm with every seed; returns one result dict per run (cached on disk).

    Each run records the mean training loss of every `loss_every` steps and the test
    accuracy after every epoch. A run's `study_result.json`, written last and
    atomically, marks it done: rerunning a study skips finished runs, and the run that
    was interrupted continues from its last completed epoch.
    """
    base = dataclasses.replace(base, log_every_n_steps=loss_every, test_every_epoch=True)
    results = []
    total = len(arms) * len(seeds)
    for i, (a, seed) in enumerate(((a, s) for a in arms for s in seeds), start=1):
        run_dir = os.path.join(study_dir, f"{a.name}_seed{seed}")
        result_path = os.path.join(run_dir, "study_result.json")
        config = a.config(base, seed, run_dir)
        config.validate()
        cached = atomic.read_json(result_path)
        if cached is not None:
            if cached.get("config") != dataclasses.asdict(config):
                raise ValueError(f"{run_dir} holds a result of other settings; remove it or "
                                 "choose another --runs_dir.")
            results.append(cached)
            log.info("[%d/%d] %s seed %d: done earlier", i, total, a.name, seed)
            continue
        log.info("[%d/%d] %s seed %d", i, total, a.name, seed)
        start = time.perf_counter()
        # Killed after training but before the result was written: the run is complete.
        metrics = Workdir(run_dir).read_final() or training.run(config)
        result = {"arm": a.name, "seed": seed, "overrides": dict(a.overrides),
                  "config": dataclasses.asdict(config), **metrics,
                  "wall_seconds": time.perf_counter() - start,
                  "test_accuracy_per_epoch": [row["test_accuracy"] for row in metrics["history"]]}
        write_hparams(os.path.join(run_dir, "tensorboard", "hparams"), a, config, result)
        atomic.write_json(result_path, result, indent=1)
        results.append(result)
    return results


def write_hparams(logdir: str, a: Arm, config: TrainConfig, result: dict) -> None:
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
        len(x) == len(y) and np.array_equal(x, y)
        for x, y in zip(curves[first], curves[second], strict=False))
        and all(x["test_accuracy_per_epoch"] == y["test_accuracy_per_epoch"]
                for x, y in zip(runs[first], runs[second], strict=False)))
    gap = np.abs(stacked[0].mean(0) - stacked[1].mean(0))
    spread = np.maximum(np.ptp(stacked[0], axis=0), np.ptp(stacked[1], axis=0))
    return {"accuracy_difference": difference, "two_standard_errors": two_se,
            "accuracy_agrees": identical or abs(difference) <= two_se,
            "windows": length, "windows_within_seed_range": int(np.sum(gap <= spread)),
            "max_curve_gap": (float(np.nanmax(gap)) if np.any(np.isfinite(gap))
                              else float("nan")),  # NaN: no finite window (diverged runs)
            "identical": identical}


def batch_statistics_accuracy(model_path: str, test: tf.data.Dataset) -> float:
    """Test accuracy of a saved model when BN normalizes each test batch with its own
    statistics (training mode, weights not updated) instead of the moving ones."""
    import keras

    import bn_keras.models  # noqa: F401 - registers our layers for loading

    model = keras.models.load_model(model_path)
    correct = total = 0
    for x, y in test:
        logits = model(x, training=True)
        correct += int(np.sum(np.argmax(logits, -1) == y.numpy()))
        total += int(y.shape[0])
    return correct / total


def gradient_norm_rows(runs_dir: str, base: TrainConfig, arms: Sequence[Arm]) -> list[dict]:
    """Per-layer gradient norms on a fixed batch of validation images, at initialization
    (seed 0) and after training (the seed-0 run's final model), for every arm."""
    import keras

    from bn_keras import diagnostics, models

    rows = []
    datasets = training.make_datasets(base)
    x, y = training.probe_batch(datasets["validation"], base.batch_size)
    for a in arms:
        config = a.config(base, 0, "")
        keras.utils.set_random_seed(0)
        probes = {"init": models.build_model(config.model, config.bn, **config.model_options(1)),
                  "trained": keras.models.load_model(
                      os.path.join(runs_dir, f"{a.name}_seed0", "final.keras"))}
        for when, model in probes.items():
            for layer, norm in diagnostics.gradient_norms(model, x, y).items():
                rows.append({"arm": a.name, "when": when, "layer": layer, "grad_norm": norm})
    return rows
