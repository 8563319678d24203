"""Checks an exported SavedModel in this (fresh) process against reference outputs.

Prints the signatures as `saved_model_cli show --all` does, runs serving_default
on the reference images, and fails unless the predicted classes equal the
reference ones and the logits agree within --tolerance. Called by export.py.

    python experiments/verify_export.py --saved_model=saved_models/lenet/1 --reference=ref.npz
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

import subprocess  # noqa: E402
import sys  # noqa: E402

from absl import flags  # noqa: E402

from bn_keras.errors import Unusable, UserError  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("saved_model", None, "An exported version directory.", required=True)
    flags.DEFINE_string("reference", None, "npz with images, labels and logits.", required=True)
    flags.DEFINE_float("tolerance", 1e-4, "Max |logit difference| allowed.")
    flags.DEFINE_string("result_json", None, "Also write what was measured here, as JSON.")


def show_all(path: str) -> str:
    """What `saved_model_cli show --dir PATH --all` prints."""
    proc = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli",
                           "show", "--dir", path, "--all"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise Unusable(f"saved_model_cli could not read {path}: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def main(argv):
    del argv
    import numpy as np

    from bn_keras.serve import export

    loaded = export.load_serving_model(FLAGS.saved_model)
    print(show_all(FLAGS.saved_model))
    reference = np.load(FLAGS.reference)
    outputs = export.serve(loaded, reference["images"])
    comparison = export.compare_logits(outputs["logits"], reference["logits"])
    accuracy = float(np.mean(outputs["class_id"] == reference["labels"]))
    print(f"served model (fresh process): test accuracy {accuracy:.4f} on "
          f"{len(reference['labels'])} images; vs Keras: max |logit diff| "
          f"{comparison['max_abs_logit_diff']:.2e}, class mismatches "
          f"{comparison['class_mismatch_rate']:.2%}")
    if FLAGS.result_json:
        from bn_keras import atomic

        atomic.write_json(FLAGS.result_json, {"test_accuracy": accuracy,
                                              "images": len(reference["labels"]), **comparison})
    if comparison["class_mismatch_rate"] > 0 or comparison["max_abs_logit_diff"] > FLAGS.tolerance:
        raise UserError(f"served outputs differ from the Keras model's: {comparison}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
