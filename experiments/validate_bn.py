"""Proves bn_keras.layers.BatchNormalization equal to keras.layers.BatchNormalization.

Runs the comparison of bn_keras.testing.equivalence over a grid of configurations
(shapes, axes, batch sizes 1-64, offsets up to 1e4, constant inputs, mixed
precision, renorm, masks, synchronized) on the Keras backend selected by
KERAS_BACKEND, against that backend's built-in layer, and prints, and writes
to --output_dir as Markdown and CSV, a table of the largest difference per
quantity, each layer's worst error against a float64 NumPy reference,
pass/fail and the training-step time of ours vs the built-in. The report is
validation.md on TensorFlow and validation_<backend>.md on the others.

    python experiments/validate_bn.py                          # runs/validation/
    KERAS_BACKEND=jax python experiments/validate_bn.py
    python experiments/validate_bn.py --output_dir=experiments/results   # the committed reports
"""

from __future__ import annotations

import os

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

from absl import flags, logging  # noqa: E402

FLAGS = flags.FLAGS
DEFAULT_OUTPUT_DIR = "runs/validation"


def define_flags() -> None:
    flags.DEFINE_string("output_dir", DEFAULT_OUTPUT_DIR,
                        "Where the report (Markdown and CSV) is written. The committed reports "
                        "are updated only with --output_dir=experiments/results.")
    flags.DEFINE_integer("steps", 5, "Training steps before the moving statistics are compared.",
                         lower_bound=1)
    flags.DEFINE_integer("timing_iterations", 20,
                         "Training steps per timing round (0 skips timing).", lower_bound=0)
    flags.DEFINE_bool("quick", False, "Only the first few configurations (a smoke run).")


COLUMNS = ["case", "train_output", "infer_output", "grad_input", "grad_gamma", "grad_beta",
           "moving_mean", "moving_variance", "ours_vs_exact", "keras_vs_exact",
           "infer_vs_own_statistics", "tolerance",
           "config_roundtrip", "passed", "xla_passed", "xla_max_diff", "keras_ms", "ours_ms",
           "time_ratio"]


def report_stem(backend: str) -> str:
    """validation on TensorFlow (the name the README links), validation_<backend> elsewhere."""
    return "validation" if backend == "tensorflow" else f"validation_{backend}"


def run(output_dir: str, steps: int, timing_iterations: int, quick: bool) -> list[dict]:
    import keras

    from bn_keras import environment, tables
    from bn_keras.testing import equivalence, harness, layer_steps

    backend = keras.config.backend()
    device = harness.current().device_name()
    cases = equivalence.default_grid()[: 4 if quick else None]
    rows = []
    for i, case in enumerate(cases, start=1):
        logging.info("[%d/%d] %s", i, len(cases), case.name)
        row = equivalence.compare(case, steps=steps)
        if backend == "tensorflow":  # XLA through tf.function(jit_compile=True)
            row.update(equivalence.xla_column(case, steps=steps))
        if timing_iterations:
            builtin, ours = equivalence.build_pair(case)
            times = layer_steps.time_layers(
                {"keras": builtin, "ours": ours}, equivalence.make_batches(case, 1)[0],
                equivalence.make_mask(case), iterations=timing_iterations, infer=False)
            row.update(keras_ms=times[("keras", "train")], ours_ms=times[("ours", "train")],
                       time_ratio=times[("ours", "train")] / times[("keras", "train")])
        rows.append(row)
    passed = sum(r["passed"] for r in rows)
    xla_text = (f"; {sum(r['xla_passed'] for r in rows)}/{len(rows)} with ours compiled by XLA "
                "(`xla_passed`; `xla_max_diff`, its largest difference from Keras', not "
                "compiled; the batch size unknown while tracing, as Keras' trainer traces it)"
                if backend == "tensorflow" else "")
    env = "" if backend == "tensorflow" else f"KERAS_BACKEND={backend} "
    if "OMP_NUM_THREADS" in os.environ:  # PyTorch's CPU thread count changes its timings
        env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {env}"
    preamble = (
        f"# Our BatchNormalization vs keras.layers.BatchNormalization on {backend}\n\n"
        f"Command: `{env}python experiments/validate_bn.py --steps={steps} "
        f"--timing_iterations={timing_iterations}{' --quick' if quick else ''}"
        f" --output_dir={output_dir}`\n\n"
        f"Backend: {backend} (Keras {keras.__version__}), device: {device}. Measured on: "
        f"{environment.summary((backend, 'keras'))}.\n\n"
        f"{passed}/{len(rows)} configurations pass{xla_text}. Columns 2-8: max |ours - keras| per "
        f"quantity, divided by max(1, max|keras|) (absolute for unit-scale values, relative "
        f"for large ones; inf where Keras' value is finite and ours is not, nan where Keras' "
        f"is not); moving statistics after {steps} training steps. `ours_vs_exact` / "
        "`keras_vs_exact`: each layer's worst such error against a float64 NumPy reference "
        "(plain float32 cases). `infer_vs_own_statistics`: ours' inference output against "
        "float64 computed from its own float32 moving statistics (the error the inference "
        "formula adds; `converged` cases start from the data's statistics, so inputs at "
        "offset 1e4 are normalized to unit scale), which must be within `tolerance`. "
        "A quantity passes within `tolerance` of Keras, or, on "
        "ill-conditioned inputs where the two float32 results differ more, when ours is at "
        f"most {equivalence.ROUNDING_ALLOWANCE:g}x as far from the exact value as Keras. "
        "Outside TensorFlow, Keras' layer refuses synchronized=True; ours with it is compared "
        "with Keras' without it (the same math on one device). Times: median ms per training "
        "step (forward + backward, compiled as the backend's trainer does: tf.function, "
        "jax.jit, eager PyTorch), ours and Keras' measured in turn.\n\n"
    )
    md_path, csv_path = tables.write_table(rows, COLUMNS, output_dir, report_stem(backend),
                                           preamble)
    print(tables.markdown_table(rows, COLUMNS))
    print(f"{passed}/{len(rows)} configurations pass on {backend} ({device}); "
          f"wrote {md_path} and {csv_path}")
    return rows


def main(argv: list[str]) -> None:
    del argv
    run(FLAGS.output_dir, FLAGS.steps, FLAGS.timing_iterations, FLAGS.quick)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
