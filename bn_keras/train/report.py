"""A training run's report: its command, settings, per-epoch table and curve.

    <output_dir>/<name>.md, <name>.csv (one row per epoch), <name>.png

Read from the run's work directory (bn_keras.train.workdir): config.json,
final_metrics.json and its per-epoch history.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from bn_keras import atomic, plotting, tables
from bn_keras.train.workdir import Workdir

COLUMNS = ["epoch", "learning_rate", "loss", "accuracy", "val_accuracy", "test_accuracy",
           "images_per_second", "epoch_seconds"]


def write(workdir: str, output_dir: str, name: str, command: str,
          wall_seconds: float | None = None, notes: str = "") -> str:
    """Writes the report of the run in `workdir`; returns the Markdown path.

    A run stopped before its last epoch (Ctrl-C, a time limit) is reported as
    unfinished, from its last completed epoch.
    """
    w = Workdir(workdir)
    final = w.read_final()
    config = atomic.read_json(w.config)
    history = final["history"] if final else (w.latest().history if config else [])
    if not history:
        raise FileNotFoundError(f"{workdir!r} holds no completed epoch of a run.")
    rows = [_row(r) for r in history]
    os.makedirs(output_dir, exist_ok=True)
    png = plot_run_curves(history, os.path.join(output_dir, f"{name}.png"),
                                f"{config['model']}, bn={config['bn']}: {len(rows)} epochs"
                                + ("" if final else f" of {config['epochs']}"))
    settings = ", ".join(f"{k}={config[k]}" for k in sorted(config)
                         if k not in ("workdir", "data_dir", "verbose"))
    wall = "" if wall_seconds is None else (
        f"Wall time of the whole command: {wall_seconds:.0f} s ({wall_seconds / 60:.1f} min), "
        "evaluation included. ")
    if final:
        outcome = (
            f"Test accuracy after the last epoch: **{final['test_accuracy']:.4f}** "
            f"(test loss {final['test_loss']:.4f}); training images/s, median of the epochs "
            f"after the first: {final['train_images_per_second']:.0f}"
            + (f"; the run diverged in epoch {final['diverged_at_epoch'] + 1}"
               if final["diverged"] else "") + ".")
    else:
        last = history[-1]
        test = last.get("test_accuracy")
        outcome = (
            f"**Unfinished**: stopped after {len(history)} of {config['epochs']} epochs "
            "(the same command resumes it exactly)"
            + ("" if test is None else
               f"; test accuracy after epoch {len(history)}: **{test:.4f}**") + ".")
    preamble = (
        f"# {name}\n\nCommand: `{command}`\n\n{wall}{outcome}\n\n"
        f"Settings: {settings}.\n\n{notes}{'' if not notes else chr(10) * 2}"
        "Per epoch (test accuracy evaluated after every epoch, not used for any choice):\n\n")
    md, _ = tables.write_table(rows, COLUMNS, output_dir, name, preamble,
                               postscript=f"\n![{os.path.basename(png)}]({os.path.basename(png)})\n")
    return md


def _row(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: record.get(k) for k in COLUMNS}
    if row["images_per_second"] is not None:
        row["images_per_second"] = round(row["images_per_second"])
    if row["epoch_seconds"] is not None:
        row["epoch_seconds"] = f"{row['epoch_seconds']:.1f}"
    for key in ("loss", "accuracy", "val_accuracy", "test_accuracy"):
        if row[key] is not None:
            row[key] = f"{row[key]:.4f}"
    return row


def plot_run_curves(history: Sequence[dict], path: str, title: str) -> str:
    """One training run, epoch by epoch: test and validation accuracy (left axis) and the
    training loss (right axis)."""
    fig, ax = plotting.axes()
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
    return plotting.save_figure(fig, ax, path, title, "epoch", "accuracy")
