"""The BN study's plots (matplotlib, drawn off-screen), from the results of bn_keras.study.

Every function writes one PNG and returns its path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from bn_keras import diagnostics
from bn_keras.study import by_arm


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
    if ax.get_legend_handles_labels()[0]:  # nothing to label when a study has no curve yet
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
    for (name, runs), style in zip(groups.items(), ("-", "--", "-.", ":") * len(groups),
                                  strict=False):
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
    """Final test accuracy against an override (learning rate, batch size), one line per arm
    family."""
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
        series = diagnostics.read_scalars(
            os.path.join(runs_dir, f"{arm_name}_seed0", "tensorboard", "bn_diagnostics"),
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


def plot_run_curves(history: Sequence[dict], path: str, title: str) -> str:
    """One training run, epoch by epoch: test and validation accuracy (left axis) and the
    training loss (right axis)."""
    fig, ax = axes()
    epochs = [row["epoch"] for row in history]
    for key, label, style in (("test_accuracy", "test accuracy", "o-"),
                              ("val_accuracy", "validation accuracy", "s--"),
                              ("accuracy", "training accuracy", ":")):
        if all(key in row for row in history):
            ax.plot(epochs, [row[key] for row in history], style, markersize=3, label=label)
    loss_axis = ax.twinx()
    loss_axis.plot(epochs, [row["loss"] for row in history], color="C3", linewidth=0.8)
    loss_axis.set_ylabel("training loss", color="C3")
    ax.grid(alpha=0.3)
    return save_figure(fig, ax, path, title, "epoch", "accuracy")
