"""The BN doctor: what is wrong with a trained model's BN layers, what it costs, how to fix it.

    python experiments/diagnose_bn.py --workdir=runs/lenet_custom \\
        --data_dir=../shared/datasets/tensorflow_datasets --output_json=bn_doctor.json
    python experiments/diagnose_bn.py --model_path=model.keras             # static checks only
    python experiments/diagnose_bn.py --model_path=model.keras --preprocessing=cifar_normalized \\
        --batch_size=128 --data_dir=../shared/datasets/tensorflow_datasets \\
        --fix --output=fixed.keras

A work directory says how its data was preprocessed and its batch size (config.json); for
a bare .keras file, say them (--preprocessing, --batch_size), or the checks that need
them are skipped and named. Prints one row per finding, then each finding's evidence and
fix. Exit status: 0 when no finding is an error, 2 when one is (a CI guard), 1 when the
command failed. --fix re-estimates the statistics (where that scores better), writes the
repaired model to --output and diagnoses it again (the exit status is then the repaired
model's); what needs a code change is said in words.
"""

from __future__ import annotations

import sys

from bn_keras import cli

cli.quiet_tensorflow()

from absl import flags  # noqa: E402

from bn_keras.errors import InvalidSetting, NotFound  # noqa: E402

FLAGS = flags.FLAGS
UNHEALTHY = 2  # exit status when a finding is an error


def define_flags() -> None:
    from bn_keras.train import checkup

    flags.DEFINE_string("workdir", None, "A finished training run's work directory (its "
                        "final.keras and config.json).")
    flags.DEFINE_string("model_path", None, "A .keras file instead of --workdir.")
    flags.DEFINE_string("data_dir", None, "TFDS data directory holding cifar10/: the data "
                        "checks run with it (or on synthetic data), else only the static "
                        "ones.")
    flags.DEFINE_enum("dataset", "cifar10", list(checkup.DATASETS),
                      "Images for the data checks of --model_path (synthetic: for smoke "
                      "tests); a workdir's config.json says its own.")
    flags.DEFINE_enum("preprocessing", None, list(checkup.PREPROCESSING),
                      "How the model's input images are preprocessed (--model_path): "
                      "cifar_normalized = standardized with CIFAR-10's channel statistics, "
                      "as every run here; none = pixels 0..255. Unset: the data checks are "
                      "skipped. A workdir's config.json says it.")
    flags.DEFINE_integer("batch_size", None, "The batch size per replica the model was "
                         "trained at (--model_path; a workdir's config.json says it): for "
                         "the small-batch check, and the batches statistics are re-estimated "
                         "in (default 128).", lower_bound=1)
    flags.DEFINE_integer("replicas", None, "Replicas it was trained on (--model_path).",
                         lower_bound=1)
    flags.DEFINE_integer("calibration_examples", checkup.CALIBRATION_EXAMPLES,
                         "Training images to re-estimate the statistics from.", lower_bound=1)
    flags.DEFINE_integer("evaluation_examples", checkup.EVALUATION_EXAMPLES,
                         "Validation images to measure on.", lower_bound=1)
    flags.DEFINE_string("output_json", None, "Also write the report to this JSON file.")
    flags.DEFINE_bool("fix", False, "Re-estimate the statistics where that scores better, "
                      "write the repaired model to --output and diagnose it again.")
    flags.DEFINE_string("output", None, "Where --fix writes the repaired .keras model.")


def inputs(f) -> tuple[str, object, int | None, int]:
    """(model path, data or None, training batch size, replicas) from the flags."""
    from bn_keras.train import checkup

    if bool(f.workdir) == bool(f.model_path):
        raise InvalidSetting("give exactly one of `workdir` or `model_path`.")
    if f.workdir:
        for name in ("preprocessing", "batch_size", "replicas"):
            if f[name].value is not None:
                raise InvalidSetting(f"`{name}` is for `model_path`: the workdir's "
                                     "config.json says it.")
        path, config, replicas = checkup.run_inputs(f.workdir)
        with_data = f.data_dir is not None or config.dataset == "synthetic"
        data = (checkup.run_data(config, f.calibration_examples, f.evaluation_examples,
                                 f.data_dir) if with_data else None)
        return path, data, config.batch_size, replicas
    with_data = f.data_dir is not None or f.dataset == "synthetic"
    import os

    if not os.path.isfile(f.model_path):
        raise NotFound(f"no model file at {f.model_path!r}.")
    data = None
    if with_data and f.preprocessing is not None:
        data = checkup.images_data(f.dataset, f.data_dir, f.preprocessing, f.batch_size or 128,
                                   f.calibration_examples, f.evaluation_examples)
    return f.model_path, data, f.batch_size, f.replicas or 1


def table(diagnosis) -> str:
    """The findings as a table, then each one's evidence, cost and fix."""
    from bn_keras import tables

    rows = diagnosis.rows()
    lines = [diagnosis.summary(), ""]
    if rows:
        lines.append(tables.markdown_table(
            [{**r, "#": i} for i, r in enumerate(rows, 1)],
            ["#", "severity", "check", "layers", "problem", "cost"]))
        for i, finding in enumerate(diagnosis.findings, 1):
            lines.append(f"{i}. {finding.check} ({', '.join(finding.layers) or 'model'})")
            lines.append(f"   evidence: {finding.evidence}")
            lines.append(f"   fix{' (--fix does it)' if finding.fixable else ''}: {finding.fix}")
    for check, why in diagnosis.skipped.items():
        lines.append(f"not checked: {check}: {why}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    from bn_keras import atomic
    from bn_keras.train import checkup

    if FLAGS.fix and not FLAGS.output:
        raise InvalidSetting("`fix` writes the repaired model: give `output` (a .keras path).")
    path, data, batch_size, replicas = inputs(FLAGS)
    if data is None and FLAGS.fix:
        raise InvalidSetting("`fix` needs the data: give `data_dir` and, for `model_path`, "
                             "`preprocessing`.")
    result, model = checkup.examine(path, data, batch_size, replicas, fix=FLAGS.fix)
    print(f"BN doctor on {path}" + (f" ({result.data})" if result.data else
                                     " (no data: static checks only)"))
    print(table(result.diagnosis))
    final = result.diagnosis
    if FLAGS.fix:
        model.save(FLAGS.output)
        print(f"\n--fix: {result.repair.reason}; wrote {FLAGS.output}. Measured again:")
        print(table(result.after))
        final = result.after
        needs_code = [f for f in final.findings if not f.fixable and f.severity != "info"]
        for finding in needs_code:
            print(f"needs a change of code or training: {finding.line()}: {finding.fix}")
    print(f"({result.seconds:.1f} s)")
    if FLAGS.output_json:
        atomic.write_json(FLAGS.output_json, result.to_json())
        print(f"wrote {FLAGS.output_json}")
    if not final.healthy:
        sys.exit(UNHEALTHY)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
