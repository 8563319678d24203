"""The BN doctor on its catalogue of broken and healthy models, trained on real CIFAR-10.

    python experiments/doctor_catalogue.py --data_dir=../shared/datasets/tensorflow_datasets \\
        --runs_dir=runs/doctor_catalogue --output_dir=experiments/results \\
        --workdirs=runs/lenet_quickstart,runs/resnet20_short

Trains each case of bn_keras.testing.doctor_cases (LeNet, 3 epochs over the 45,000
training images unless the case says otherwise; cached as <runs_dir>/<case>.keras), runs
the doctor on it as `experiments/diagnose_bn.py --preprocessing=cifar_normalized
--batch_size=<the case's> --fix` does, and measures on the 10,000 test images the
accuracy before and after --fix against a reference: the same weights with statistics
re-estimated over all training images. Also checks the data guard (the healthy model
given wrongly preprocessed data) and, with --workdirs, diagnoses those training runs.
Writes <output_dir>/bn_doctor.md.
"""

from __future__ import annotations

from bn_keras import cli

cli.quiet_tensorflow()

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
# The reference's statistics: all 45,000 training images, in batches of the training
# batch size; at batch 2, the first 10,000 (5,000 batches), as the BN study did.
REFERENCE_EXAMPLES = 45_000
REFERENCE_EXAMPLES_SMALL_BATCH = 10_000


def define_flags() -> None:
    flags.DEFINE_string("data_dir", None, "TFDS data directory holding cifar10/.",
                        required=True)
    flags.DEFINE_string("runs_dir", "runs/doctor_catalogue", "Where the trained cases are "
                        "kept (<case>.keras), and trained only when missing.")
    flags.DEFINE_string("output_dir", "runs/reports", "Where bn_doctor.md goes "
                        "(experiments/results: the committed one).")
    flags.DEFINE_list("cases", None, "Only these cases (default: all).")
    flags.DEFINE_integer("epochs", 3, "Training epochs of each case.", lower_bound=1)
    flags.DEFINE_list("workdirs", [], "Training runs to diagnose too (their final.keras, "
                      "config.json and bn_doctor.json).")
    flags.DEFINE_string("command", None, "The command quoted in the report (default: this "
                        "one).")


def _test_score(model, test):
    from bn_keras.doctor import measurement

    return measurement.score(model, measurement.take_batches(test, 1000, 500))


def _reference(path: str, train, batch_size: int, test):
    """The model at `path` with statistics re-estimated over the training images."""
    from bn_keras import saving
    from bn_keras.data import pipelines
    from bn_keras.layers import batch_norm_layers, recalibrate_batch_norm

    model = saving.load_model(path)
    for layer in batch_norm_layers(model):
        if not layer.built:  # never called (the tutorial's): nothing to re-estimate
            layer.trainable = False
    count = REFERENCE_EXAMPLES if batch_size >= 8 else REFERENCE_EXAMPLES_SMALL_BATCH
    recalibrate_batch_norm(model, pipelines.evaluation_pipeline(train.take(count), batch_size))
    return _test_score(model, test), count


def _findings_text(diagnosis) -> str:
    if not diagnosis.bn_layers:
        return "no BN layers"
    if not diagnosis.findings:
        return "none"
    return "<br>".join(f"{f.severity} `{f.check}`: {', '.join(f.layers) or 'model'}"
                       + (f" ({f.cost})" if f.cost and "points" in f.cost else "")
                       for f in diagnosis.findings)


def _found(case, diagnosis) -> str:
    from bn_keras.testing import doctor_cases

    missed = doctor_cases.missed(case, diagnosis)
    return "NO: " + "; ".join(missed) if missed else "yes"


def catalogue(splits, data_dir: str):
    import os
    import time

    from bn_keras import saving
    from bn_keras.testing import doctor_cases
    from bn_keras.train import checkup

    cases = [doctor_cases.BY_NAME[name] for name in (FLAGS.cases or doctor_cases.BY_NAME)]
    data = doctor_cases.TrainingData(splits["train"].inputs, splits["train"].labels,
                                     epochs=FLAGS.epochs)
    os.makedirs(FLAGS.runs_dir, exist_ok=True)
    rows, fixes, guard, details = [], [], [], []
    for case in cases:
        path = os.path.join(FLAGS.runs_dir, f"{case.name}.keras")
        train_seconds = None
        if not os.path.isfile(path):
            start = time.perf_counter()
            case.train(data, "lenet").save(path)
            train_seconds = time.perf_counter() - start
        doctor_data = checkup.images_data("cifar10", data_dir, "cifar_normalized",
                                          case.batch_size)
        result, repaired = checkup.examine(path, doctor_data, case.batch_size, fix=True)
        diagnosis = result.diagnosis
        print(f"{case.name}: {diagnosis.summary()}", flush=True)
        rows.append({"case": case.name, "what": case.description,
                     "must find": ", ".join(f"`{c}` {layer or ''}".strip()
                                            for c, layer in case.expected) or "no error",
                     "doctor's findings": _findings_text(diagnosis),
                     "found": _found(case, diagnosis),
                     "doctor s": f"{diagnosis.seconds:.1f}",
                     "train s": "-" if train_seconds is None else f"{train_seconds:.0f}"})
        measured = diagnosis.measurement
        if measured is not None and measured.layers:
            first = next((s for s in measured.layers), None)
            guard.append({"model": case.name, "data": "cifar_normalized (right)",
                          "first BN layer": first.layer,
                          "variance ratio": _number(first.variance_ratio),
                          "mean shift (sd)": _number(first.mean_shift),
                          "findings": _findings_text(diagnosis)})
        before = _test_score(saving.load_model(path), splits["test"]["batches"])
        after = _test_score(repaired, splits["test"]["batches"])
        reference, count = _reference(path, splits["train"], case.batch_size,
                                      splits["test"]["batches"])
        gap = reference.accuracy - before.accuracy
        closed = (after.accuracy - before.accuracy) / gap if abs(gap) > 1e-9 else None
        fixes.append({"case": case.name, "--fix can repair": "yes" if case.fixable else "no",
                      "test acc before": f"{before.accuracy:.4f}",
                      "after --fix": f"{after.accuracy:.4f}",
                      "reference": f"{reference.accuracy:.4f}",
                      "gap": f"{gap * 100:+.1f}",
                      "closed": "-" if closed is None or gap <= 0.005 else f"{closed:.0%}",
                      "--fix did": result.repair.reason,
                      "still to change": _code_changes(result.after)})
        details.append((case, result, count))
    return rows, fixes, guard, details


def _number(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _code_changes(diagnosis) -> str:
    needed = [f for f in diagnosis.findings if not f.fixable and f.severity != "info"]
    return "<br>".join(f"`{f.check}`: {f.fix.split(';')[0]}" for f in needed) or "-"


def wrong_preprocessing(splits, data_dir: str) -> list[dict]:
    """The healthy model given data preprocessed otherwise than in training."""
    import os

    import tensorflow as tf

    from bn_keras.data import pipelines
    from bn_keras.doctor import diagnose_batch_norm
    from bn_keras.saving import load_model

    path = os.path.join(FLAGS.runs_dir, "healthy_keras.keras")
    if not os.path.isfile(path):
        return []
    rows = []
    for name, preprocess in (
            ("none (pixels 0..255)", lambda x: tf.cast(x, tf.float32)),
            ("[0, 1] (pixels / 255)", lambda x: tf.cast(x, tf.float32) / 255.0)):
        train = pipelines.evaluation_pipeline(splits["train"].take(5120), 128, preprocess)
        validation = pipelines.evaluation_pipeline(splits["validation"], 500, preprocess)
        diagnosis = diagnose_batch_norm(load_model(path), validation, calibration_data=train,
                                        batch_size=128, max_batches=40)
        measured = diagnosis.measurement
        first = measured.layers[0]
        rows.append({"model": "healthy_keras", "data": name, "first BN layer": first.layer,
                     "variance ratio": _number(first.variance_ratio),
                     "mean shift (sd)": _number(first.mean_shift),
                     "findings": _findings_text(diagnosis)})
    return rows


def runs(workdirs: list[str], data_dir: str) -> str:
    """The doctor on training runs: what train.py wrote at their end (bn_doctor.json), and
    the command's default measurement."""
    from bn_keras import tables
    from bn_keras.train import checkup

    text = ""
    for workdir in workdirs:
        path, config, replicas = checkup.run_inputs(workdir)
        written = checkup.read_run_checkup(workdir)
        data = checkup.run_data(config, data_dir=data_dir)
        result, _ = checkup.examine(path, data, config.batch_size, replicas)
        diagnosis = result.diagnosis
        m = diagnosis.measurement
        text += (f"\n### {workdir}\n\nTrained by `{_train_command(config)}` "
                 f"({diagnosis.updates:,} steps).\n\n"
                 f"`python experiments/diagnose_bn.py --workdir={workdir} "
                 f"--data_dir={data_dir}` ({result.seconds:.1f} s; {result.data}): "
                 f"{diagnosis.summary()}\n\n")
        if m is not None:
            text += (f"Validation accuracy with the moving statistics {m.moving.accuracy:.4f}, "
                     f"re-estimated {m.re_estimated.accuracy:.4f}, training mode "
                     f"{m.batch.accuracy:.4f}.\n\n")
        if diagnosis.findings:
            text += tables.markdown_table(diagnosis.rows(), ["severity", "check", "layers",
                                                             "problem", "cost"]) + "\n"
        if written is not None:
            text += (f"At the end of its training, `experiments/train.py` wrote bn_doctor.json "
                     f"in {written.seconds:.1f} s ({written.data}): "
                     f"{written.diagnosis.summary()}\n")
    return text


def _train_command(config) -> str:
    """The train.py command of a run: its settings that differ from the defaults."""
    import dataclasses

    from bn_keras.train.config import TrainConfig

    default = TrainConfig()
    changed = [f"--{f.name}" if value is True else f"--no{f.name}" if value is False
               else f"--{f.name}={value}"
               for f in dataclasses.fields(TrainConfig)
               if f.name not in ("verbose", "workdir")
               and (value := getattr(config, f.name)) != getattr(default, f.name)]
    return " ".join(["python experiments/train.py", *changed, f"--workdir={config.workdir}"])


def main(argv: list[str]) -> None:
    del argv
    import os
    import sys
    import time

    from bn_keras import atomic, environment, tables
    from bn_keras.data import pipelines, sources
    from bn_keras.doctor import thresholds

    start = time.perf_counter()
    data_dir = FLAGS.data_dir
    loaded = sources.cifar10_splits(data_dir, download=False)
    splits = {"train": loaded["train"], "validation": loaded["validation"],
              "test": {"batches": pipelines.evaluation_pipeline(loaded["test"], 500)}}
    rows, fixes, guard, details = catalogue(splits, data_dir)
    guard += wrong_preprocessing(splits, data_dir)
    run_text = runs(FLAGS.workdirs, data_dir)
    command = FLAGS.command or "python " + " ".join(sys.argv)
    wall = time.perf_counter() - start
    md = [
        "# The BN doctor on its catalogue (real CIFAR-10)\n",
        f"Command: `{command}`\n",
        f"Measured on: {environment.summary()}. Wall time: {wall:.0f} s (cases already "
        "trained are not trained again).\n",
        "Each case of `bn_keras.testing.doctor_cases` is LeNet (conv 6@5x5, conv 16@5x5, "
        f"dense 120, dense 84, BN after each) trained {FLAGS.epochs} epochs on the 45,000 "
        "training images (unless its description says otherwise), made broken the way BN "
        "users break it. The doctor ran as `experiments/diagnose_bn.py "
        "--preprocessing=cifar_normalized --batch_size=<the case's> --fix` does: statistics "
        "re-estimated from the first 12,800 training images (in batches of the training "
        "batch size), measured on the first 5,000 validation images (`train[45000:]`, never "
        "trained on). A found finding must name the right layer; a healthy model must get "
        "no error.\n",
        "## Findings\n",
        tables.markdown_table(rows, list(rows[0])),
        "\n## What --fix repairs\n",
        "Test accuracy on the 10,000 test images: as the model was delivered, after "
        "`--fix` (statistics re-estimated from 12,800 training images, kept where they score "
        "a lower loss on the validation images), and the reference: the same weights with "
        "statistics re-estimated over all 45,000 training images (10,000 at batch 2) in "
        "batches of the training batch size, i.e. the same model with correct statistics. "
        "Gap = reference - before (points); closed = (after - before) / gap. What needs a "
        "code change is said in words (`still to change`).\n",
        tables.markdown_table(fixes, list(fixes[0])),
        "\n## The data guard\n",
        "Wrongly preprocessed data must not produce \"stale statistics\" findings. The "
        "first BN layer's input is a linear function of the model's input: the median "
        "over its channels of the data's variance over the moving variance, and of the "
        "mean's distance in moving standard deviations. Thresholds "
        f"{thresholds.DATA_MISMATCH_VARIANCE_RATIO:g}x and "
        f"{thresholds.DATA_MISMATCH_SHIFT:g} (bn_keras/doctor/thresholds.py); cases whose "
        "first layer's statistics are untrained or mostly initial are not guarded.\n",
        tables.markdown_table(guard, list(guard[0])) if guard else "",
    ]
    if run_text:
        md += ["\n## Training runs\n", run_text]
    md.append("\n## Evidence of each finding\n")
    for case, result, _ in details:
        md.append(f"\n### {case.name}\n\n{case.description}\n")
        for f in result.diagnosis.findings:
            md.append(f"- **{f.severity}** `{f.check}` ({', '.join(f.layers) or 'model'}): "
                      f"{f.problem}. {f.evidence} Fix: {f.fix}.")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    path = os.path.join(FLAGS.output_dir, "bn_doctor.md")
    atomic.write_text(path, "\n".join(md) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
