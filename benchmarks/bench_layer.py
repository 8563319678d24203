"""Times our BatchNormalization against keras.layers.BatchNormalization, side by side.

For each shape: a training step (forward + backward, moving-statistics update)
and an inference call, STEPS_PER_CALL of them inside one tf.function, both implementations
interleaved in the same process so machine noise hits them alike. Prints a
Markdown table of median milliseconds and the ratio ours / built-in.

    python benchmarks/bench_layer.py [--repeats 7] [--iterations 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bn_keras.layers import BatchNormalization  # noqa: E402

SHAPES = [(128, 28, 28, 6), (128, 10, 10, 16), (256, 32, 32, 64), (128, 120), (32, 126, 64)]
# Shapes around the fused kernel's break-even size, for --crossover.
CROSSOVER_SHAPES = [(10, 10, 10, 16), (32, 10, 10, 16), (64, 10, 10, 16), (10, 126, 64),
                    (10, 8, 8, 64), (4, 32, 32, 64), (16, 32, 32, 64)]
TARGETS = {4: 0.6, 2: 1.0, 3: 1.0}  # training-step ratio targets by input rank
INFERENCE_TARGET = 1.0


# Steps run inside one tf.function call, so the per-call dispatch cost (about
# 0.2 ms here, as large as a whole BN step on a (128, 120) input) is amortized
# and the table measures the layer rather than Python.
STEPS_PER_CALL = 10


def _step_functions(layer_cls, shape, forward=None):
    layer = layer_cls()
    layer.build(shape)
    x = tf.random.normal(shape, seed=0)
    forward = forward or (lambda layer, x: layer(x, training=True))

    @tf.function
    def train_step():
        total = tf.zeros([])
        for _ in tf.range(STEPS_PER_CALL):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = forward(layer, x)
                loss = tf.reduce_sum(y * y)
            grads = tape.gradient(loss, [x] + layer.trainable_weights)
            total += tf.add_n([tf.reduce_sum(g) for g in grads])
        return total

    @tf.function
    def infer():
        total = tf.zeros([])
        for _ in tf.range(STEPS_PER_CALL):
            total += tf.reduce_sum(layer(x, training=False))
        return total

    return train_step, infer


def _time(fn, iterations):
    start = time.perf_counter()
    for _ in range(iterations):
        result = fn()
    result.numpy()
    return (time.perf_counter() - start) / (iterations * STEPS_PER_CALL) * 1e3


def benchmark(shape, repeats, iterations):
    fns = {name: _step_functions(cls, shape)
           for name, cls in (("keras", keras.layers.BatchNormalization), ("ours", BatchNormalization))}
    for train_step, infer in fns.values():  # trace and warm up
        _time(train_step, 3)
        _time(infer, 3)
    times = {(name, kind): [] for name in fns for kind in ("train", "infer")}
    for _ in range(repeats):
        for name, (train_step, infer) in fns.items():
            times[(name, "train")].append(_time(train_step, iterations))
            times[(name, "infer")].append(_time(infer, iterations))
    return {key: statistics.median(values) for key, values in times.items()}


def crossover(repeats, iterations):
    """Training-step time of the two fast paths of our layer, each forced, vs Keras'."""
    print("| shape | elements | keras ms | fused / keras | rows / keras |")
    print("|---|---|---|---|---|")
    for shape in CROSSOVER_SHAPES:
        steps = {
            "keras": _step_functions(keras.layers.BatchNormalization, shape)[0],
            "fused": _step_functions(BatchNormalization, shape,
                                     lambda layer, x: layer._fused(x, True))[0],
            "rows": _step_functions(BatchNormalization, shape,
                                    lambda layer, x: layer._batch_normalize_rows(x))[0],
        }
        for step in steps.values():
            _time(step, 3)
        times = {name: [] for name in steps}
        for _ in range(repeats):
            for name, step in steps.items():
                times[name].append(_time(step, iterations))
        t = {name: statistics.median(v) for name, v in times.items()}
        elements = 1
        for d in shape:
            elements *= d
        print(f"| {shape} | {elements} | {t['keras']:.3f} | {t['fused'] / t['keras']:.2f}x | "
              f"{t['rows'] / t['keras']:.2f}x |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=10,
                        help=f"tf.function calls per repeat, each running {STEPS_PER_CALL} steps")
    parser.add_argument("--crossover", action="store_true",
                        help="compare the fused and row paths around the size threshold instead")
    args = parser.parse_args()
    if args.crossover:
        crossover(args.repeats, args.iterations)
        return
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}; median of {args.repeats} "
          f"repeats x {args.iterations} calls x {STEPS_PER_CALL} steps; ratio = ours / keras (lower is faster)\n")
    print("| shape | train keras ms | train ours ms | train ratio | target | "
          "infer keras ms | infer ours ms | infer ratio | target | met |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        t = benchmark(shape, args.repeats, args.iterations)
        train_ratio = t[("ours", "train")] / t[("keras", "train")]
        infer_ratio = t[("ours", "infer")] / t[("keras", "infer")]
        target = TARGETS[len(shape)]
        met = train_ratio <= target and infer_ratio <= INFERENCE_TARGET
        print(f"| {shape} | {t[('keras', 'train')]:.3f} | {t[('ours', 'train')]:.3f} | "
              f"{train_ratio:.2f}x | <= {target}x | {t[('keras', 'infer')]:.3f} | "
              f"{t[('ours', 'infer')]:.3f} | {infer_ratio:.2f}x | <= {INFERENCE_TARGET}x | "
              f"{'yes' if met else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
