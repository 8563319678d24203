"""Serving latency and throughput of a BN-folded vs an unfolded SavedModel, side by side.

Exports the same model twice (BN folded into conv/dense, and not), loads both
with tf.saved_model.load and times the serving_default signature on uint8
batches of 1 and 256, interleaved, in one process.

    python benchmarks/bench_serving.py [--model=lenet|resnet20] [--workdir=runs/x]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bn_keras import export, models  # noqa: E402


def _time(fn, images, iterations):
    start = time.perf_counter()
    for _ in range(iterations):
        out = fn(image=images)
    out["logits"].numpy()
    return (time.perf_counter() - start) / iterations


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet", choices=["lenet", "resnet20"])
    parser.add_argument("--workdir", default=None,
                        help="export this training run's best checkpoint instead of a fresh model")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.workdir:
        model = keras.models.load_model(os.path.join(args.workdir, "checkpoints", "best.keras"))
    else:
        model = models.build_model(args.model, "custom")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        signatures = {}
        for fold in (False, True):
            path = export.export_saved_model(model, tmp, f"fold_{fold}", fold_bn=fold)
            signatures[fold] = export.load_serving_model(path).signatures["serving_default"]
        print(f"{model.name}, {os.cpu_count()} CPU cores; median of {args.repeats} repeats\n")
        print("| batch | unfolded ms/batch | folded ms/batch | unfolded img/s | folded img/s | "
              "folded / unfolded time |")
        print("|---|---|---|---|---|---|")
        for batch, iterations in ((1, 200), (256, 10)):
            images = tf.constant(rng.integers(0, 256, (batch, 32, 32, 3)), tf.uint8)
            for fn in signatures.values():
                _time(fn, images, 3)
            times = {fold: [] for fold in signatures}
            for _ in range(args.repeats):
                for fold, fn in signatures.items():
                    times[fold].append(_time(fn, images, iterations))
            t = {fold: statistics.median(v) for fold, v in times.items()}
            print(f"| {batch} | {t[False] * 1e3:.3f} | {t[True] * 1e3:.3f} | "
                  f"{batch / t[False]:.0f} | {batch / t[True]:.0f} | {t[True] / t[False]:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
