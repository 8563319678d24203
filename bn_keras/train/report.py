"""A training run's report: its command, settings, per-epoch table and curve.

    <output_dir>/<name>.md, <name>.csv (one row per epoch), <name>.png

Read from the run's work directory (bn_keras.train.workdir): config.json,
final_metrics.json and its per-epoch history.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from bn_keras import atomic, environment, plotting, tables
from bn_keras.errors import NotFound
from bn_keras.train import averaging, checkup
from bn_keras.train.results import RunResult
from bn_keras.train.workdir import Workdir

COLUMNS = ["epoch", "learning_rate", "loss", "accuracy", "val_accuracy", "test_accuracy",
           "images_per_second", "epoch_seconds"]


def write(workdir: str, output_dir: str, name: str, command: str,
          wall_seconds: float | None = None, notes: str = "",
          export: dict[str, Any] | None = None) -> str:
    """Writes the report of the run in `workdir`; returns the Markdown path.

    A run stopped before its last epoch (Ctrl-C, a time limit) is reported as
    unfinished, from its last completed epoch. `export`: what `experiments/export.py
    --report_json` measured of the run's SavedModel, for a Serving section. Beside the
    Markdown, `<name>.json` holds the report's headline figures for other documents.
    """
    w = Workdir(workdir)
    final = w.read_final()
    config = atomic.read_json(w.config)
    history = final.history if final else (w.latest().history if config else [])
    if not history:
        raise NotFound(f"{workdir!r} holds no completed epoch of a run (is it a training "
                       "work directory?).")
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
            f"Test accuracy after the last epoch: **{final.test_accuracy:.4f}** "
            f"(test loss {final.test_loss:.4f}); training images/s, median of the epochs "
            f"after the first: {final.train_images_per_second:.0f}"
            + (f"; the run diverged in epoch {final.diverged_at_epoch + 1}"
               if final.diverged else "") + ".")
    else:
        last = history[-1]
        test = last.get("test_accuracy")
        outcome = (
            f"**Unfinished**: stopped after {len(history)} of {config['epochs']} epochs "
            "(the same command resumes it exactly)"
            + ("" if test is None else
               f"; test accuracy after epoch {len(history)}: **{test:.4f}**") + ".")
    measured_on = (final and final.measured_on) or environment.summary()
    preamble = (
        f"# {name}\n\nCommand: `{command}`\n\n{wall}{outcome}\n\n"
        f"Measured on: {measured_on}.\n\n{_variants_text(final)}"
        f"Settings: {settings}.\n\n{notes}{'' if not notes else chr(10) * 2}"
        "Per epoch (test accuracy evaluated after every epoch, not used for any choice):\n\n")
    md, _ = tables.write_table(rows, COLUMNS, output_dir, name, preamble,
                               postscript=f"\n![{os.path.basename(png)}]({os.path.basename(png)})\n"
                               + _serving_text(export) + _doctor_text(workdir))
    atomic.write_json(os.path.join(output_dir, f"{name}.json"), {
        "command": command, "finished": final is not None, "epochs": len(history),
        "test_accuracy": final.test_accuracy if final else history[-1].get("test_accuracy"),
        "wall_seconds": wall_seconds, "measured_on": measured_on,
        "served_test_accuracy": (export or {}).get("served", {}).get("test_accuracy")})
    return md


def _serving_text(export: dict[str, Any] | None) -> str:
    """The run's model exported for TF Serving: what was folded, how close the folded
    model stayed, what the served model scores (experiments/export.py --report_json)."""
    if not export:
        return ""
    served = export.get("served") or {}
    rows = [{"SavedModel": export["saved_model"], "source": export["source"],
             "BN layers folded": export.get("bn_folded", 0),
             "max |logit diff| folded vs unfolded": "{:.1e}".format(
                 export["folded_vs_unfolded"]["max_abs_logit_diff"])
             if "folded_vs_unfolded" in export else "-",
             "class mismatches": "{:.2%}".format(
                 export["folded_vs_unfolded"]["class_mismatch_rate"])
             if "folded_vs_unfolded" in export else "-",
             "served test accuracy (fresh process)": "{:.4f}".format(served["test_accuracy"])
             if served else "-",
             "images": served.get("images", "-")}]
    kept = "".join(f" Kept: {k} ({v})." for k, v in export.get("bn_kept", {}).items())
    return ("\n## Serving\n\nThe run's model exported for TF Serving by "
            "`experiments/export.py` (BN folded into the layer before it, checked against "
            f"the unfolded model, then served from a fresh process).{kept}\n\n"
            + tables.markdown_table(rows, list(rows[0])))


def _doctor_text(workdir: str) -> str:
    """The BN doctor's checkup of the final model (workdir/bn_doctor.json), if written."""
    found = checkup.read_run_checkup(workdir)
    if found is None:
        return ""
    diagnosis = found.diagnosis
    text = (f"\n## BN doctor\n\n`experiments/diagnose_bn.py` on the final model, as "
            f"`experiments/train.py` ran it at the end ({found.seconds:.1f} s; "
            f"{found.data or 'no data'}): {diagnosis.summary()}\n")
    if diagnosis.findings:
        text += "\n" + tables.markdown_table(diagnosis.rows(), ["severity", "check", "layers",
                                                                "problem", "cost"])
    return text


def _variants_text(final: RunResult | None) -> str:
    """The final test with each of the weights the run could keep (EMA, re-estimated BN
    statistics), where it measured them."""
    variants = final and final.test_variants
    if not variants:
        return ""
    with_bn = final.bn_statistics is not None
    lines = [f"- {averaging.variant_label(k, with_bn)}: {variants[k].test_accuracy:.4f} "
             f"(loss {variants[k].test_loss:.4f})"
             for k in averaging.VARIANTS if k in variants]
    recalibration = final.recalibration
    how = ("" if not recalibration else
           f" (statistics re-estimated over {recalibration.batches} unaugmented training "
           f"batches, {recalibration.examples:,} images)")
    kept = (f"the {final.evaluated_weights} weights with {final.bn_statistics} BN "
            f"statistics{how}" if with_bn else f"the {final.evaluated_weights} weights")
    return (f"The run keeps {kept}. Test accuracy after the last epoch "
            "with each:\n\n" + "\n".join(lines) + "\n\n")


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


def write_seeds(results_dir: str, stems: Sequence[str], name: str, title: str,
                target: float, max_minutes: float, notes: str = "") -> str:
    """One recipe over several seeds, from the runs' reports in `results_dir` (`<stem>.json`
    and `.csv`, as `write` leaves them): each seed's test and validation accuracy after its
    last epoch, wall time and CPU, then mean ± sample std, against `target` (test accuracy)
    and `max_minutes` (per seed). Writes `<name>.md` and `<name>.json`; returns the path."""
    rows, tests = [], []
    for stem in stems:
        summary = atomic.read_json(os.path.join(results_dir, f"{stem}.json"), kind=dict)
        if summary is None:
            raise NotFound(f"no report {stem}.json in {results_dir!r}: write it with "
                           "experiments/report_run.py first.")
        with open(os.path.join(results_dir, f"{stem}.csv")) as f:
            last = list(csv.DictReader(f))[-1]
        minutes = (summary["wall_seconds"] or float("nan")) / 60
        tests.append(summary["test_accuracy"])
        rows.append({"report": f"[{stem}]({stem}.md)", "seed": _seed(summary["command"]),
                     "epochs": summary["epochs"], "validation accuracy": last["val_accuracy"],
                     "test accuracy": f"{summary['test_accuracy']:.4f}",
                     "wall time (min)": f"{minutes:.1f}",
                     "under the time limit": "yes" if minutes < max_minutes else "no",
                     "measured on": summary["measured_on"].split(";")[0]})
    mean = float(np.mean(tests))
    verdict = ("met" if mean >= target else f"missed by {target - mean:.4f}")
    text = (f"# {title}\n\n{notes}{chr(10) * 2 if notes else ''}"
            f"Test accuracy after the last epoch over {len(tests)} seeds: "
            f"**{tables.mean_std(tests)}** (mean ± sample std). Target: mean >= {target} "
            f"({verdict}); each seed under {max_minutes:.0f} minutes "
            f"({sum(r['under the time limit'] == 'yes' for r in rows)} of {len(rows)}).\n\n"
            + tables.markdown_table(rows, list(rows[0])))
    path = os.path.join(results_dir, f"{name}.md")
    atomic.write_text(path, text)
    atomic.write_json(os.path.join(results_dir, f"{name}.json"), {
        "test_accuracy_mean": mean, "test_accuracy_std": float(np.std(tests, ddof=1)),
        "seeds": len(tests), "target": target, "reports": list(stems)})
    return path


def _seed(command: str) -> int:
    match = re.search(r"--seed=(\d+)", command)
    return int(match.group(1)) if match else 0
