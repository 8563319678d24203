"""Proves bn_keras.layers.BatchNormalization equal to keras.layers.BatchNormalization.

Runs the comparison of bn_keras.equivalence over a grid of configurations
(shapes, axes, batch sizes 1-64, offsets up to 1e4, constant inputs, mixed
precision, renorm, masks) and prints, and writes to --output_dir as Markdown
and CSV, a table of the largest difference per quantity, each layer's worst
error against a float64 NumPy reference, pass/fail and the training-step time
of ours vs the built-in.

    python experiments/validate_bn.py --output_dir=experiments/results
"""

from __future__ import annotations

from bn_keras import cli

cli.quiet_tensorflow()

from absl import flags, logging  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("output_dir", "experiments/results",
                        "Where validation.md and validation.csv are written.")
    flags.DEFINE_integer("steps", 5, "Training steps before the moving statistics are compared.",
                         lower_bound=1)
    flags.DEFINE_integer("timing_iterations", 20,
                         "Training steps per timing repeat (0 skips timing).", lower_bound=0)
    flags.DEFINE_bool("quick", False, "Only the first few configurations (a smoke run).")


COLUMNS = ["case", "train_output", "infer_output", "grad_input", "grad_gamma", "grad_beta",
           "moving_mean", "moving_variance", "ours_vs_exact", "keras_vs_exact", "tolerance",
           "config_roundtrip", "passed", "keras_ms", "ours_ms", "time_ratio"]


def run(output_dir: str, steps: int, timing_iterations: int, quick: bool) -> list[dict]:
    from bn_keras import equivalence, tables

    cases = equivalence.default_grid()[: 4 if quick else None]
    rows = []
    for i, case in enumerate(cases, start=1):
        logging.info("[%d/%d] %s", i, len(cases), case.name)
        row = equivalence.compare(case, steps=steps)
        if timing_iterations:
            times = equivalence.time_training_step(case, timing_iterations)
            row.update(keras_ms=times["keras"], ours_ms=times["ours"],
                       time_ratio=times["ours"] / times["keras"])
        rows.append(row)
    passed = sum(r["passed"] for r in rows)
    preamble = (
        "# Our BatchNormalization vs keras.layers.BatchNormalization\n\n"
        f"Command: `python experiments/validate_bn.py --steps={steps} "
        f"--timing_iterations={timing_iterations}{' --quick' if quick else ''}`\n\n"
        f"{passed}/{len(rows)} configurations pass. Columns 2-8: max |ours - keras| per "
        f"quantity, divided by max(1, max|keras|) (absolute for unit-scale values, relative "
        f"for large ones); moving statistics after {steps} training steps. `ours_vs_exact` / "
        "`keras_vs_exact`: each layer's worst such error against a float64 NumPy reference "
        "(plain float32 cases). A quantity passes within `tolerance` of Keras, or, on "
        "ill-conditioned inputs where the two float32 results differ more, when ours is at "
        f"most {equivalence.ROUNDING_ALLOWANCE:g}x as far from the exact value as Keras. "
        "Times: median ms per training step (forward + backward in tf.function).\n\n"
    )
    md_path, csv_path = tables.write_table(rows, COLUMNS, output_dir, "validation", preamble)
    print(tables.markdown_table(rows, COLUMNS))
    print(f"{passed}/{len(rows)} configurations pass; wrote {md_path} and {csv_path}")
    return rows


def main(argv: list[str]) -> None:
    del argv
    run(FLAGS.output_dir, FLAGS.steps, FLAGS.timing_iterations, FLAGS.quick)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
