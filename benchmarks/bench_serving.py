"""Serving latency and throughput of a BN-folded vs an unfolded SavedModel, side by side.

Exports the same model twice (BN folded into conv/dense, and not), loads both
with tf.saved_model.load and times the serving_default signature on uint8
batches of 1 and 256, in turn, round after round (bn_keras.testing.timing.interleaved,
after one warm-up round), in one process; the table gives medians.

    python benchmarks/bench_serving.py [--model=lenet|resnet20] [--workdir=runs/x]
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

import os  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402

from absl import flags  # noqa: E402

from bn_keras.data import cifar  # noqa: E402
from bn_keras.errors import NotFound  # noqa: E402

FLAGS = flags.FLAGS
BATCHES = ((1, 200), (256, 10))  # (batch size, calls per timing)


def define_flags() -> None:
    cli.define_report_flag("bench_serving")
    flags.DEFINE_enum("model", "lenet", ["lenet", "resnet20"],
                      "Network to export (freshly initialized) when --workdir is not given.")
    flags.DEFINE_string("workdir", None,
                        "Export this training run's checkpoints/best.keras instead.")
    flags.DEFINE_integer("repeats", 7, "Timed rounds after the warm-up round.", lower_bound=1)


def seconds_per_batch(signature, images, calls: int) -> Callable[[], float]:
    """A measure: mean seconds of `signature(image=images)` over `calls` calls."""
    from bn_keras.testing import timing

    return lambda: timing.seconds_per_call(lambda: signature(image=images), calls,
                                           sync=lambda out: out["logits"].numpy())


def load_model():
    from bn_keras import models, saving

    if FLAGS.workdir is None:
        return models.build_model(FLAGS.model, "custom")
    path = os.path.join(FLAGS.workdir, "checkpoints", "best.keras")
    if not os.path.exists(path):
        raise NotFound(f"no checkpoint at {path}; is --workdir a training run?")
    return saving.load_model(path)


def benchmark() -> None:
    import numpy as np
    import tensorflow as tf

    from bn_keras.serve import export
    from bn_keras.testing import timing

    model = load_model()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        signatures = {}
        for fold in (False, True):
            path = export.export_saved_model(model, tmp, f"fold_{fold}", fold_bn=fold)
            signatures[fold] = export.load_serving_model(path).signatures["serving_default"]
        print(f"{model.name}, {os.cpu_count()} CPU cores; median of {FLAGS.repeats} "
              "interleaved rounds\n")
        print("| batch | unfolded ms/batch | folded ms/batch | unfolded img/s | folded img/s | "
              "folded / unfolded time |")
        print("|---|---|---|---|---|---|")
        for batch, calls in BATCHES:
            images = tf.constant(rng.integers(0, 256, (batch, *cifar.IMAGE_SHAPE)), tf.uint8)
            t = timing.interleaved_medians(
                {fold: seconds_per_batch(fn, images, calls) for fold, fn in signatures.items()},
                FLAGS.repeats)
            print(f"| {batch} | {t[False] * 1e3:.3f} | {t[True] * 1e3:.3f} | "
                  f"{batch / t[False]:.0f} | {batch / t[True]:.0f} | {t[True] / t[False]:.2f}x |",
                  flush=True)


TITLE = "Serving latency, folded vs unfolded (benchmarks/bench_serving.py)"

if __name__ == "__main__":
    define_flags()
    cli.run_benchmark(TITLE, benchmark)
