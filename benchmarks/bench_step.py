"""How to run a training step fastest on this CPU: the measurement behind train.py's
defaults (one thread for small steps; XLA off unless asked for).

LeNet (or, with --model=resnet20, ResNet-20) with our BN, Adam, on in-memory batches, N
steps per call, four ways:

- `graph`: the N steps in a plain tf.function loop (what Keras' `steps_per_execution`
  does);
- `xla_each`: the same loop calling a step compiled by XLA (Keras' `jit_compile`);
- `xla_while`: the N steps as one XLA program, a loop over a stacked [N, batch, ...]
  tensor;
- `xla_unrolled`: the N steps unrolled into one XLA program;

each with TensorFlow's default threads (one per core) and with one thread per op (a
process sets its threads once, so each setting runs in a process of its own). Prints
images/s (best of the repeats), and each way's first call (tracing and compiling).

    python benchmarks/bench_step.py                     # batch 10 and 128, N = 10
    python benchmarks/bench_step.py --batch_sizes=10 --steps_per_call=50
    python benchmarks/bench_step.py --model=resnet20 --batch_sizes=128 --ways=graph,xla_each
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

from bn_keras.errors import InvalidSetting  # noqa: E402

FLAGS = flags.FLAGS
WAYS = ("graph", "xla_each", "xla_while", "xla_unrolled")
MODELS = {"lenet": "LeNet", "resnet20": "ResNet-20"}


def define_flags() -> None:
    cli.define_report_flag("bench_step")
    flags.DEFINE_enum("model", "lenet", list(MODELS), "Network to train (float32, our BN).")
    flags.DEFINE_list("batch_sizes", ["10", "128"], "Batch sizes to measure.")
    flags.DEFINE_integer("steps_per_call", 10, "Training steps per call (N).", lower_bound=1)
    flags.DEFINE_integer("images", 5000, "Images per timed pass.", lower_bound=1)
    flags.DEFINE_integer("repeats", 3, "Timed passes; the best is reported.", lower_bound=1)
    flags.DEFINE_list("ways", list(WAYS), f"Ways to measure: {', '.join(WAYS)}.")
    flags.DEFINE_integer("measure_threads", None, "Internal: measure in this process, with "
                         "this many threads (0: TensorFlow's default).", lower_bound=0)


def measure(model_name, ways, batch_sizes, steps, images, repeats) -> dict:
    """{way: {batch: [images/s, first call s]}} in this process."""
    import keras
    import numpy as np
    import tensorflow as tf

    from bn_keras import models

    results: dict = {}
    for batch in batch_sizes:
        count = max(images - images % (batch * steps), batch * steps)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(count // (batch * steps), steps, batch, 32, 32, 3))
        y = rng.integers(0, 10, size=x.shape[:3])
        xs = [tf.constant(a, tf.float32) for a in x]
        ys = [tf.constant(a) for a in y]
        for way in ways:
            keras.utils.set_random_seed(0)
            model = models.build_model(model_name, "custom")
            optimizer = keras.optimizers.Adam(1e-4)
            optimizer.build(model.trainable_variables)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

            def step(xb, yb, model=model, optimizer=optimizer, loss=loss):
                with tf.GradientTape() as tape:
                    value = loss(yb, model(xb, training=True))
                grads = tape.gradient(value, model.trainable_variables)
                optimizer.apply(grads, model.trainable_variables)
                return value

            run = _way(way, step, steps)
            start = time.perf_counter()
            run(xs[0], ys[0]).numpy()
            first = time.perf_counter() - start
            best = 0.0
            for _ in range(repeats):
                start = time.perf_counter()
                for a, b in zip(xs, ys, strict=True):
                    value = run(a, b)
                value.numpy()
                best = max(best, count / (time.perf_counter() - start))
            results.setdefault(way, {})[str(batch)] = [best, first]
    return results


def _way(way, step, steps):
    import tensorflow as tf

    if way == "xla_unrolled":
        def unrolled(xs, ys):
            for i in range(steps):
                value = step(xs[i], ys[i])
            return value

        return tf.function(unrolled, jit_compile=True)
    inner = tf.function(step, jit_compile=True) if way == "xla_each" else step

    def loop(xs, ys):
        value = tf.constant(0.0)
        for i in tf.range(steps):
            value = inner(xs[i], ys[i])
        return value

    return tf.function(loop, jit_compile=way == "xla_while")


def benchmark() -> None:
    unknown = sorted(set(FLAGS.ways) - set(WAYS))
    if unknown:
        raise InvalidSetting(f"--ways: unknown {', '.join(unknown)}; expected some of "
                             f"{', '.join(WAYS)}.")
    try:
        batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    except ValueError:
        raise InvalidSetting(f"--batch_sizes={','.join(FLAGS.batch_sizes)}: expected "
                             "integers.") from None
    if FLAGS.measure_threads is not None:  # a child: measure, print JSON
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.measure_threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.measure_threads)
        print(json.dumps(measure(FLAGS.model, FLAGS.ways, batch_sizes, FLAGS.steps_per_call,
                                 FLAGS.images, FLAGS.repeats)))
        return
    results = {}
    for threads in (0, 1):
        done = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:],
                               f"--measure_threads={threads}"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1])
        results[threads] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{MODELS[FLAGS.model]} with our BN, Adam, {FLAGS.steps_per_call} steps per call; "
          f"best of {FLAGS.repeats} passes of about {FLAGS.images} images.\n")
    print("| way | batch | images/s, default threads | images/s, 1 thread | first call s "
          "(default / 1) |")
    print("|---|---|---|---|---|")
    for way in FLAGS.ways:
        for batch in batch_sizes:
            default, one = results[0][way][str(batch)], results[1][way][str(batch)]
            print(f"| {way} | {batch} | {default[0]:,.0f} | {one[0]:,.0f} | "
                  f"{default[1]:.1f} / {one[1]:.1f} |")


TITLE = "Ways to run a training step (benchmarks/bench_step.py)"

if __name__ == "__main__":
    define_flags()
    cli.run_benchmark(TITLE, benchmark,
                      report_wanted=lambda: FLAGS.measure_threads is None)
