"""Proves the BN tools (fold, recalibrate, freeze) against independent references.

Runs bn_keras.testing.tools_grid over its cases (every kind of convolution, Dense on 2-D
and 3-D inputs, channels_first, nested and Sequential models, a BN used twice, a BN run
only in inference mode, Ghost BN, renorm, frozen layers, mixed precision, inputs far
from zero, a batch of one) for our BN and Keras', on the Keras backend selected by
KERAS_BACKEND; on TensorFlow also under a 2-replica MirroredStrategy. Prints, and
writes to --output_dir as Markdown and CSV, one row per case and BN class:
validation_tools.md on TensorFlow, validation_tools_<backend>.md on the others.

    python experiments/validate_tools.py                          # runs/validation/
    KERAS_BACKEND=jax python experiments/validate_tools.py
    python experiments/validate_tools.py --output_dir=experiments/results   # committed
"""

from __future__ import annotations

import os

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

from absl import flags, logging  # noqa: E402

FLAGS = flags.FLAGS

COLUMNS = ["case", "bn", "policy", "folded", "kept", "weights_vs_reference",
           "output_vs_unfolded", "fold_tolerance", "recalibrate_batch",
           "recalibrate_population", "freeze_vs_inference", "fit_changes_no_bn_weight",
           "passed"]


def define_flags() -> None:
    flags.DEFINE_string("output_dir", "runs/validation",
                        "Where the report (Markdown and CSV) is written. The committed reports "
                        "are updated only with --output_dir=experiments/results.")
    flags.DEFINE_bool("quick", False, "Only the first few cases (a smoke run).")


def report_stem(backend: str) -> str:
    return "validation_tools" if backend == "tensorflow" else f"validation_tools_{backend}"


def split_cpu() -> None:
    """Two logical CPUs for the MirroredStrategy check (before TensorFlow's runtime)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def run(output_dir: str, quick: bool) -> list[dict]:
    import keras

    from bn_keras import environment, tables
    from bn_keras.testing import harness, tools_grid

    backend = keras.config.backend()
    if backend == "tensorflow":
        split_cpu()
    rows = []
    for bn in tools_grid.BN_CLASSES:
        cases = tools_grid.grid_for(bn)[: 3 if quick else None]
        for i, case in enumerate(cases, start=1):
            logging.info("[%s %d/%d] %s", bn, i, len(cases), case.name)
            rows.append(tools_grid.check(case, bn))
    strategy_text = ""
    if backend == "tensorflow":
        import tensorflow as tf

        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
        strategy = tools_grid.check_under_strategy(tf.distribute.MirroredStrategy(devices))
        rows += strategy.rows
        strategy_text = strategy.text
    passed = sum(bool(r["passed"]) for r in rows)
    env = "" if backend == "tensorflow" else f"KERAS_BACKEND={backend} "
    preamble = (
        f"# The BN tools against independent references on {backend}\n\n"
        f"Command: `{env}python experiments/validate_tools.py{' --quick' if quick else ''}"
        f" --output_dir={output_dir}`\n\n"
        f"Backend: {backend} (Keras {keras.__version__}), device: "
        f"{harness.current().device_name()}. Measured on: "
        f"{environment.summary((backend, 'keras'))}.\n\n"
        f"{passed}/{len(rows)} rows pass (each case with our BN and Keras', Ghost BN ours "
        "only). `folded`/`kept`: what `fold_batch_norm` folded and kept (by name; a kept "
        "BN is named with its reason by `fold_report`). `weights_vs_reference`: the "
        f"folded kernel and bias against {rows[0]['fold_reference']} on PyTorch's (out, "
        "in, ...) layout; `output_vs_unfolded`: folded against unfolded inference outputs, "
        "max |difference| / max(1, max |unfolded|), within `fold_tolerance` (float32 "
        f"{tools_grid.FOLD_TOLERANCES['float32']:g}; under mixed precision the folded layer "
        "rounds W * gamma / sigma to the compute dtype where the unfolded one rounded W). "
        "`recalibrate_*`: `recalibrate_batch_norm` with variance=\"batch\" and "
        "\"population\" against float64 NumPy from each layer's captured inputs (largest "
        "error, relative to the channel's spread for the mean and to the variance for the "
        f"variance; within {tools_grid.STATISTICS_TOLERANCE:g}; layers shared or never run "
        "in training mode keep their statistics, checked unchanged; 'refused': a batch "
        "giving a layer one value per channel, the model unchanged). "
        "`freeze_vs_inference`: each frozen BN's training-mode output against BN's "
        "inference formula in float64; `fit_changes_no_bn_weight`: one `fit` step after "
        f"freezing.{strategy_text}\n\n")
    md_path, csv_path = tables.write_table(rows, COLUMNS, output_dir, report_stem(backend),
                                           preamble)
    print(tables.markdown_table(rows, COLUMNS))
    print(f"{passed}/{len(rows)} rows pass on {backend}; wrote {md_path} and {csv_path}")
    return rows


def main(argv: list[str]) -> None:
    del argv
    rows = run(FLAGS.output_dir, FLAGS.quick)
    if not all(r["passed"] for r in rows):
        from bn_keras.errors import UserError

        raise UserError(f"{sum(not r['passed'] for r in rows)} rows fail (see the table).")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    define_flags()
    cli.run(main)
