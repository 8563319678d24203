"""Times our BatchNormalization against keras.layers.BatchNormalization, side by side.

For each shape: a training step (forward + backward, moving-statistics update)
and an inference call, each inside one tf.function, both implementations
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
TARGETS = {4: 0.6, 2: 1.0, 3: 1.0}  # training-step ratio targets by input rank
INFERENCE_TARGET = 1.0


def _step_functions(layer_cls, shape):
    layer = layer_cls()
    layer.build(shape)
    x = tf.random.normal(shape, seed=0)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x] + layer.trainable_weights)

    @tf.function
    def infer():
        return layer(x, training=False)

    return train_step, infer


def _time(fn, iterations):
    start = time.perf_counter()
    for _ in range(iterations):
        result = fn()
    tf.nest.map_structure(lambda t: t.numpy(), result)
    return (time.perf_counter() - start) / iterations * 1e3


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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}; median of {args.repeats} "
          f"repeats x {args.iterations} calls; ratio = ours / keras (lower is faster)\n")
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
