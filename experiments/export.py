"""Exports a trained model as a TF Serving SavedModel and verifies it in a fresh process.

    python experiments/export.py --workdir=runs/lenet_custom --name=lenet_custom \\
        --data_dir=../shared/datasets/tensorflow_datasets

Writes saved_models/<name>/<next version>/ (BN folded into conv/dense by
default; a model trained under mixed precision is served in float32), checks the
folded model against the unfolded one on the test set,
then reloads the SavedModel with tf.saved_model.load in a new process, prints
its signatures as `saved_model_cli show --all` does, compares its outputs with
the Keras model's and reports the served model's test accuracy.
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from absl import flags  # noqa: E402

from bn_keras.errors import InvalidSetting, NotFound, UserError  # noqa: E402

FLAGS = flags.FLAGS
FOLD_TOLERANCE = 1e-4


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A training work directory (uses checkpoints/best.keras).")
    flags.DEFINE_string("model_path", None, "A .keras file to export instead of --workdir.")
    flags.DEFINE_string("name", None, "Model name under --base_dir (default: the workdir's name).")
    flags.DEFINE_string("base_dir", "saved_models", "Root of the TF Serving model tree.")
    flags.DEFINE_integer("version", None, "Version to write (default: the next free one).",
                         lower_bound=1)
    flags.DEFINE_bool("overwrite", False, "Replace an existing version.")
    flags.DEFINE_bool("fold_bn", True, "Fold inference-mode BN into the preceding conv/dense.")
    flags.DEFINE_enum("dataset", "cifar10", ["cifar10", "synthetic"],
                      "Images for the checks: the real test split, or synthetic ones.")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR).")
    flags.DEFINE_bool("verify", True, "Reload and check the SavedModel in a fresh process.")
    flags.DEFINE_string("report_json", None,
                        "Also write what the export measured (folding, the served model's "
                        "test accuracy) to this JSON file, e.g. for report_run.py --export_json.")
    flags.DEFINE_integer("recalibrate_bn_batches", 0,
                         "Re-estimate BN's moving statistics for the model's weights over N "
                         "unaugmented training batches before exporting (0: keep them).",
                         lower_bound=0)
    flags.DEFINE_integer("recalibration_batch_size", None,
                         "Batch size for --recalibrate_bn_batches (default: the run's "
                         "--batch_size from the workdir's config.json, else 128).", lower_bound=1)


def _model_path(workdir: str | None, model_path: str | None) -> str:
    if bool(workdir) == bool(model_path):
        raise InvalidSetting("give exactly one of --workdir or --model_path.")
    if model_path:
        if not os.path.isfile(model_path):
            raise NotFound(f"no model file at {model_path!r}.")
        return model_path
    for candidate in ("checkpoints/best.keras", "final.keras"):
        path = os.path.join(workdir, candidate)
        if os.path.isfile(path):
            return path
    raise NotFound(f"{workdir!r} holds no checkpoints/best.keras or final.keras: "
                            "is it a training work directory?")


def _run_metadata(workdir: str | None) -> dict:
    """The run's config.json and final_metrics.json, where there are; a damaged one is
    DamagedFile, in one line."""
    from bn_keras import atomic

    info = {}
    for key, filename in (("training_config", "config.json"), ("training_metrics",
                                                                  "final_metrics.json")):
        if workdir:
            value = atomic.read_json(os.path.join(workdir, filename), kind=dict)
            if value is not None:
                info[key] = value
    return info


def test_images(dataset: str, data_dir: str | None):
    from bn_keras.data import sources

    source = (sources.synthetic_images(1000, seed=7) if dataset == "synthetic"
              else sources.cifar10_examples("test", data_dir, download=False))
    return source.inputs, source.labels


def recalibration_data(dataset: str, data_dir: str | None, batch_size: int):
    """Unaugmented training batches, normalized as in training (epoch 1's order)."""
    from bn_keras.data import pipelines, sources

    train = (sources.synthetic_images(2048, seed=0) if dataset == "synthetic"
             else sources.cifar10_splits(data_dir, download=False)["train"])
    return pipelines.TrainingStream(train, batch_size).epoch(0, augment=False)


def run(workdir, model_path, name, base_dir, version, overwrite, fold_bn, dataset, data_dir,
        verify, recalibrate_bn_batches=0, recalibration_batch_size=None) -> dict:
    import numpy as np

    from bn_keras import layers, saving
    from bn_keras.serve import export

    path = _model_path(workdir, model_path)
    model = saving.load_model(path)
    name = name or os.path.basename(os.path.normpath(workdir or os.path.splitext(path)[0]))
    images, labels = test_images(dataset, data_dir)
    reference = export.keras_logits(model, images)
    report = {"source": path, "test_accuracy_keras": float(np.mean(reference.argmax(-1) == labels))}
    if recalibrate_bn_batches:
        batch_size = (recalibration_batch_size
                      or _run_metadata(workdir).get("training_config", {}).get("batch_size", 128))
        info = layers.recalibrate_batch_norm(
            model, recalibration_data(dataset, data_dir, batch_size),
            num_batches=recalibrate_bn_batches)
        reference = export.keras_logits(model, images)
        report["test_accuracy_before_recalibration"] = report["test_accuracy_keras"]
        report["test_accuracy_keras"] = float(np.mean(reference.argmax(-1) == labels))
        report["recalibration"] = {"batches": info.batches, "examples": info.examples}
        print(f"BN statistics re-estimated over {info.batches} training batches "
              f"({info.examples:,} images) for {len(info.layers)} BN layers: test "
              f"accuracy {report['test_accuracy_before_recalibration']:.4f} before, "
              f"{report['test_accuracy_keras']:.4f} after")
    policy = export.mixed_precision(model)
    if policy:
        # Served in float32 (bn_keras.serve.export.serving_model): the reference for the
        # fold and the served model is the float32 copy; both accuracies are reported.
        reference = export.keras_logits(export.float32_copy(model), images)
        report["mixed_precision"] = {
            "policy": policy,
            "test_accuracy_mixed": report["test_accuracy_keras"],
            "test_accuracy_float32": float(np.mean(reference.argmax(-1) == labels))}
        print(f"trained under {policy}, served in float32: test accuracy "
              f"{report['test_accuracy_keras']:.4f} mixed, "
              f"{report['mixed_precision']['test_accuracy_float32']:.4f} in float32")
    if fold_bn:
        folded = export.compare_logits(export.keras_logits(export.serving_model(model), images),
                                       reference)
        report["folded_vs_unfolded"] = folded
        plan = layers.fold_report(model)
        report["bn_folded"], report["bn_kept"] = len(plan.folded), plan.kept
        kept = "".join(f"; kept {name}: {why}" for name, why in plan.kept.items())
        print(f"BN folding: {len(plan.folded)} BN layers folded{kept}; max |logit diff| "
              f"{folded['max_abs_logit_diff']:.2e} over {len(images)} test images, predicted "
              f"classes differ on {folded['class_mismatch_rate']:.2%}")
        if folded["max_abs_logit_diff"] > FOLD_TOLERANCE or folded["class_mismatch_rate"] > 0:
            raise UserError(f"the folded model differs from the unfolded one beyond "
                             f"{FOLD_TOLERANCE:g}: {folded}; export it with --nofold_bn.")
    metadata = {**_run_metadata(workdir), "source_model": path,
                "test_accuracy": report["test_accuracy_keras"], "checked_on": dataset,
                "bn_recalibration": report.get("recalibration")}
    target = export.export_saved_model(model, base_dir, name, version, fold_bn, metadata,
                                       overwrite)
    report["saved_model"] = target
    print(f"exported {target}")
    if verify:
        with tempfile.TemporaryDirectory() as tmp:
            reference_file = os.path.join(tmp, "reference.npz")
            np.savez(reference_file, images=images, labels=labels, logits=reference)
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "verify_export.py")
            result_file = os.path.join(tmp, "served.json")
            proc = subprocess.run([sys.executable, script, f"--saved_model={target}",
                                   f"--reference={reference_file}",
                                   f"--result_json={result_file}"])
            if proc.returncode != 0:
                raise UserError(f"verification of {target} failed (see above).")
            with open(result_file) as f:
                report["served"] = json.load(f)
    return report


def main(argv):
    del argv
    report = run(FLAGS.workdir, FLAGS.model_path, FLAGS.name, FLAGS.base_dir, FLAGS.version,
        FLAGS.overwrite, FLAGS.fold_bn, FLAGS.dataset, FLAGS.data_dir, FLAGS.verify,
        FLAGS.recalibrate_bn_batches, FLAGS.recalibration_batch_size)
    if FLAGS.report_json:
        from bn_keras import atomic

        atomic.write_json(FLAGS.report_json, {**report, "dataset": FLAGS.dataset})
        print(f"wrote {FLAGS.report_json}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
