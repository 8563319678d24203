"""The BN study's plots (matplotlib, drawn off-screen), from its runs' results.

Every function writes one PNG and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bn_keras.plotting import axes, save_figure
from bn_keras.study.runner import StudyRun, run_dir
from bn_keras.study.statistics import by_arm
from bn_keras.train.events import read_scalars


def plot_loss_curves(results: Sequence[StudyRun], path: str, title: str) -> str:
    """Mean training loss per window, one line per arm with a min-max band over seeds."""
    fig, ax = axes()
    groups = by_arm(results)
    # Arms that train alike draw on top of each other: a line style each keeps them visible.
    for (name, runs), style in zip(groups.items(), ("-", "--", "-.", ":") * len(groups),
                                  strict=False):
        curves = [np.asarray(r.result.loss_curve) for r in runs if r.result.loss_curve]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        steps = curves[0][:length, 0]
        losses = np.stack([c[:length, 1] for c in curves])
        ax.plot(steps, losses.mean(0), style, linewidth=1.2,
                label=f"{name} ({len(curves)} seeds)")
        ax.fill_between(steps, losses.min(0), losses.max(0), alpha=0.2)
    return save_figure(fig, ax, path, title, "mini-batch", "mean training loss of the window")


def plot_metric_vs(results: Sequence[StudyRun], x_key: str, path: str, title: str,
                   log_x: bool = True) -> str:
    """Final test accuracy against an override (learning rate, batch size), one line per arm
    family."""
    fig, ax = axes()
    families: dict[str, dict[float, list[float]]] = {}
    for r in results:
        family = r.arm.rsplit("@", 1)[0]
        accuracy = 0.1 if r.result.diverged else r.result.test_accuracy  # diverged: chance
        families.setdefault(family, {}).setdefault(r.overrides[x_key], []).append(accuracy)
    for family, points in families.items():
        xs = sorted(points)
        means = [np.mean(points[x]) for x in xs]
        stds = [np.std(points[x], ddof=1) if len(points[x]) > 1 else 0.0 for x in xs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=family)
    if log_x:
        ax.set_xscale("log", base=2 if x_key == "batch_size" else 10)
    return save_figure(fig, ax, path, title, x_key, "test accuracy (diverged = 0.1, chance)")


def plot_normalization_batch(results: Sequence[StudyRun], overrides: dict[str, dict],
                             sgd_batch: int, path: str, title: str) -> str:
    """Final test accuracy (mean and std over seeds) against BN's normalization batch (its
    Ghost BN group, or the whole SGD batch), the arms without one as horizontal levels."""
    fig, ax = axes()
    groups = by_arm(results)
    points = {}
    for name, runs in groups.items():
        accuracies = [r.result.test_accuracy for r in runs]
        bn = overrides.get(name, {}).get("bn")
        if bn in ("custom", "keras"):
            points[overrides[name].get("virtual_batch_size") or sgd_batch] = accuracies
        elif name in overrides:
            ax.axhline(np.mean(accuracies), linestyle="--", linewidth=1,
                       color=f"C{len(ax.lines) + 1}", label=f"{name} (mean of {len(runs)})")
    xs = sorted(points)
    ax.errorbar(xs, [np.mean(points[x]) for x in xs],
                yerr=[np.std(points[x], ddof=1) if len(points[x]) > 1 else 0.0 for x in xs],
                marker="o", capsize=3, color="C0", label="BN (Ghost BN groups; the whole batch)")
    ax.set_xscale("log", base=2)
    return save_figure(fig, ax, path, title, "examples BN normalizes together",
                       "test accuracy")


def plot_gradient_norms(rows: Sequence[dict], path: str) -> str:
    """Per-layer gradient norms of the conv layers, input to output, at init and trained."""
    fig, ax = axes()
    for (arm_name, when), style in zip(sorted({(r["arm"], r["when"]) for r in rows}),
                                       ("o-", "o--", "s-", "s--"), strict=False):
        points = [r for r in rows if r["arm"] == arm_name and r["when"] == when
                  and "conv" in r["layer"]]
        ax.plot(range(len(points)), [p["grad_norm"] for p in points], style,
                label=f"{arm_name}, {when}")
    ax.set_yscale("log")
    return save_figure(fig, ax, path, "Per-layer gradient norms, ResNet-20",
                       "conv layer (input -> output)", "||dL/dW||")


def plot_gradient_norms_during_training(runs_dir: str, grad_rows: Sequence[dict],
                                        path: str) -> str:
    """Gradient norms of the first, middle and last conv layer over training (seed 0)."""
    fig, ax = axes()
    for arm_name, style in zip(dict.fromkeys(r["arm"] for r in grad_rows), ("-", "--"),
                               strict=False):
        convs = [r["layer"] for r in grad_rows
                 if r["arm"] == arm_name and r["when"] == "init" and "conv" in r["layer"]]
        series = read_scalars(run_dir(runs_dir, arm_name, 0, "tensorboard", "bn_diagnostics"),
                              "grad_norm/")
        first_middle_last = (convs[0], convs[len(convs) // 2], convs[-1])
        for layer, color in zip(first_middle_last, ("C0", "C1", "C2"), strict=True):
            steps, norms = zip(*series[layer], strict=True)
            bad = [step for step, norm in series[layer] if not math.isfinite(norm)]
            note = f" (NaN from step {bad[0]})" if bad else ""
            ax.plot(steps, norms, style, marker="o", markersize=3, color=color,
                    label=f"{arm_name}: {layer}{note}")
    ax.set_yscale("log")
    return save_figure(fig, ax, path, "Gradient norms during training, ResNet-20 (seed 0)",
                       "training step", "||dL/dW|| on a fixed batch")
