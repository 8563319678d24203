"""Times our BatchNormalization against keras.layers.BatchNormalization, side by side.

For each shape: a training step (forward + backward, moving-statistics update)
and an inference call, each compiled as the backend's trainer would
(`tf.function`, `jax.jit`; PyTorch eagerly), both implementations measured
in turn, round after round, in the same process, so machine noise hits them
alike. Prints a Markdown table of median milliseconds per step and the ratio
ours / built-in. Runs on whichever Keras backend is selected:

    python benchmarks/bench_layer.py [--rounds=7] [--iterations=10]
    KERAS_BACKEND=jax python benchmarks/bench_layer.py
    python benchmarks/bench_layer.py --crossover      # TensorFlow: fused vs row path
    python benchmarks/bench_layer.py --xla            # TensorFlow: the kernels under XLA
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

from absl import flags  # noqa: E402

from bn_keras.errors import InvalidSetting  # noqa: E402

FLAGS = flags.FLAGS

SHAPES = [(128, 28, 28, 6), (128, 10, 10, 16), (256, 32, 32, 64), (128, 120), (32, 126, 64)]
# Shapes around the fused kernel's break-even size, for --crossover.
CROSSOVER_SHAPES = [(10, 10, 10, 16), (32, 10, 10, 16), (64, 10, 10, 16), (10, 126, 64),
                    (10, 8, 8, 64), (4, 32, 32, 64), (16, 32, 32, 64)]
TARGETS = {4: 0.6, 2: 1.0, 3: 1.0}  # training-step ratio targets by input rank (TensorFlow)
INFERENCE_TARGET = 1.0


def define_flags() -> None:
    cli.define_report_flag("bench_layer")
    flags.DEFINE_integer("rounds", 7, "Interleaved measurement rounds; medians are reported.",
                         lower_bound=1)
    flags.DEFINE_integer("iterations", 10, "Calls per round and candidate.", lower_bound=1)
    # On TensorFlow the steps of one call run in a loop inside one tf.function, so its
    # per-call dispatch cost (about 0.2 ms here, as large as a whole BN step on a
    # (128, 120) input) is amortized and the table measures the layer rather than Python.
    flags.DEFINE_integer("steps_per_call", 10, "Steps per call (in-graph on TensorFlow).",
                         lower_bound=1)
    flags.DEFINE_list("shapes", [], "Input shapes to time, e.g. 128x120,32x126x64 "
                      "(default: the five of the README's table).")
    flags.DEFINE_bool("crossover", False,
                      "TensorFlow only: time the fused and the row path, each forced, around "
                      "the size threshold, instead.")
    flags.DEFINE_bool("xla", False,
                      "TensorFlow only: time our layer compiled by XLA through each kernel "
                      "forced (rows, fused, the general path), vs Keras' layer under XLA.")


def time_layers(layers: dict, shape: tuple[int, ...], rounds: int, iterations: int,
                steps_per_call: int, infer: bool = True,
                xla: bool = False) -> dict[tuple[str, str], float]:
    """Median ms per training step (and inference call) of each named layer on `shape`."""
    import numpy as np

    from bn_keras.testing import layer_steps

    for layer in layers.values():
        layer.build(shape)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    return layer_steps.time_layers(layers, x, rounds=rounds, iterations=iterations,
                                   repeat=steps_per_call, infer=infer, xla=xla)


def layer_table(shapes, rounds, iterations, steps_per_call) -> list[dict]:
    import keras

    from bn_keras.layers import BatchNormalization

    rows = []
    for shape in shapes:
        t = time_layers({"keras": keras.layers.BatchNormalization(), "ours": BatchNormalization()},
                        shape, rounds, iterations, steps_per_call)
        row = {"shape": shape, "train_keras_ms": t[("keras", "train")],
               "train_ours_ms": t[("ours", "train")], "infer_keras_ms": t[("keras", "infer")],
               "infer_ours_ms": t[("ours", "infer")]}
        row["train_ratio"] = row["train_ours_ms"] / row["train_keras_ms"]
        row["infer_ratio"] = row["infer_ours_ms"] / row["infer_keras_ms"]
        rows.append(row)
    return rows


def crossover(rounds, iterations, steps_per_call) -> None:
    """Training-step time of our TensorFlow fast paths, each forced, vs Keras' layer."""
    import keras

    from bn_keras.backends import tensorflow as fast

    class Forced(keras.layers.Layer):
        """Plain training-mode BN through one given fast path, moving statistics included."""

        def __init__(self, path):
            super().__init__()
            self.fast_path = path

        def build(self, shape):
            self.gamma = self.add_weight(shape=shape[-1:], initializer="ones")
            self.beta = self.add_weight(shape=shape[-1:], initializer="zeros")
            self.moving_mean = self.add_weight(shape=shape[-1:], initializer="zeros",
                                               trainable=False)
            self.moving_variance = self.add_weight(shape=shape[-1:], initializer="ones",
                                                   trainable=False)

        def call(self, x, training=None, mask=None):
            y, mean, variance = self.fast_path(x, self.gamma, self.beta, 1e-3)
            self.moving_mean.assign_sub((self.moving_mean - mean) * 0.01)
            self.moving_variance.assign_sub((self.moving_variance - variance) * 0.01)
            return y

    print("| shape | elements | keras ms | fused / keras | rows / keras |")
    print("|---|---|---|---|---|")
    for shape in CROSSOVER_SHAPES:
        layers = {"keras": keras.layers.BatchNormalization(),
                  "fused": Forced(fast.fused_batch_norm), "rows": Forced(fast.rows_batch_norm)}
        t = time_layers(layers, shape, rounds, iterations, steps_per_call, infer=False)
        elements = 1
        for d in shape:
            elements *= d
        keras_ms = t[("keras", "train")]
        print(f"| {shape} | {elements} | {keras_ms:.3f} | {t[('fused', 'train')] / keras_ms:.2f}x "
              f"| {t[('rows', 'train')] / keras_ms:.2f}x |", flush=True)


def xla_kernels(rounds, iterations, steps_per_call) -> None:
    """Training-step time of our layer compiled by XLA (batch size unknown while tracing),
    through each of TensorFlow's kernels forced, and through the general path, vs Keras'
    layer compiled alike: the measurement behind the kernel our layer takes under XLA.

    One step per call, whatever --steps_per_call says: in a loop over the same batch XLA
    hoists the loop-invariant statistics out of it, and times what no training runs.
    """
    import keras

    from bn_keras.backends import tensorflow as fast
    from bn_keras.layers import BatchNormalization

    class Forced(BatchNormalization):
        def __init__(self, kernel):
            super().__init__()
            self.forced = kernel

        def _fast_kernel(self, inputs, training, mask):
            return self.forced

    print("| shape | keras ms | rows / keras | fused / keras | general / keras |")
    print("|---|---|---|---|---|")
    for shape in SHAPES + [(10, 10, 10, 16), (10, 28, 28, 6)]:
        layers = {"keras": keras.layers.BatchNormalization(), "rows": Forced(fast.ROWS),
                  "fused": Forced(fast.FUSED), "general": Forced(None)}
        t = time_layers(layers, shape, rounds, iterations * steps_per_call, 1, infer=False,
                        xla=True)
        keras_ms = t[("keras", "train")]
        print(f"| {shape} | {keras_ms:.3f} | "
              + " | ".join(f"{t[(name, 'train')] / keras_ms:.2f}x"
                           for name in ("rows", "fused", "general")) + " |", flush=True)


def benchmark() -> None:
    import keras

    backend = keras.config.backend()
    if FLAGS.crossover or FLAGS.xla:
        if backend != "tensorflow":
            raise InvalidSetting(f"--crossover and --xla time TensorFlow's fast paths; "
                                 f"KERAS_BACKEND is {backend!r}.")
        (xla_kernels if FLAGS.xla else crossover)(FLAGS.rounds, FLAGS.iterations,
                                                   FLAGS.steps_per_call)
        return
    shapes = [_parse_shape(s) for s in FLAGS.shapes] or SHAPES
    per_call = "in one tf.function" if backend == "tensorflow" else "dispatched one by one"
    print(f"Keras {keras.__version__} on {backend} ({_device()}); median of {FLAGS.rounds} "
          f"rounds x {FLAGS.iterations} calls x {FLAGS.steps_per_call} steps ({per_call}); "
          "ratio = ours / keras (lower is faster)\n")
    print("| shape | train keras ms | train ours ms | train ratio | target | "
          "infer keras ms | infer ours ms | infer ratio | target | met |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in layer_table(shapes, FLAGS.rounds, FLAGS.iterations, FLAGS.steps_per_call):
        target = TARGETS.get(len(row["shape"]), 1.0) if backend == "tensorflow" else 1.0
        met = row["train_ratio"] <= target and row["infer_ratio"] <= INFERENCE_TARGET
        print(f"| {row['shape']} | {row['train_keras_ms']:.3f} | {row['train_ours_ms']:.3f} | "
              f"{row['train_ratio']:.2f}x | <= {target}x | {row['infer_keras_ms']:.3f} | "
              f"{row['infer_ours_ms']:.3f} | {row['infer_ratio']:.2f}x | "
              f"<= {INFERENCE_TARGET}x | {'yes' if met else 'NO'} |", flush=True)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split("x"))
    except ValueError:
        shape = ()
    if len(shape) < 2 or min(shape) < 1:
        raise InvalidSetting(f"--shapes: {text!r} is not a shape like 128x120 (2+ positive "
                             "sizes).")
    return shape


def _device() -> str:
    from bn_keras.testing import harness

    return harness.current().device_name()


TITLE = "Our BatchNormalization vs Keras' (benchmarks/bench_layer.py)"

if __name__ == "__main__":
    define_flags()
    cli.run_benchmark(TITLE, benchmark)
