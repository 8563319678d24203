"""Is training ever input-bound? Pipeline images/s vs what LeNet's training step consumes.

Measures, in one process on the real CIFAR-10 training split (or --synthetic data):
- the training input pipeline alone (an epoch's order, batch, gather from
  memory, optional crop + flip, normalize, prefetch), one epoch pulled as fast
  as it produces;
- the images/s LeNet's training step consumes (model.fit on --steps batches
  already in memory, so the pipeline costs nothing), for each BN mode.
All of them in turn, round after round (bn_keras.testing.timing.interleaved, after one
warm-up round), so they share the machine's drift; the table gives medians,
and each ratio is the median of its per-round ratios.

Two targets, each with its own verdict: the pipeline delivers at least 5x what
the training step consumes, without augmentation and with crop + flip.

    python benchmarks/bench_pipeline.py --data_dir=../shared/datasets/tensorflow_datasets
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

import os  # noqa: E402
from collections.abc import Callable  # noqa: E402

from absl import flags  # noqa: E402

from bn_keras.data import cifar  # noqa: E402
from bn_keras.errors import InvalidSetting  # noqa: E402

FLAGS = flags.FLAGS
TARGET = 5.0  # pipeline images/s over training-step images/s, with and without augmentation
BN_MODES = ("none", "keras", "custom")
PIPELINES = {False: "input pipeline alone, no augmentation",
             True: "input pipeline alone, crop + flip"}


def define_flags() -> None:
    cli.define_report_flag("bench_pipeline")
    flags.DEFINE_string("data_dir", None, "TFDS data directory holding cifar10/ "
                        "(default: $TFDS_DATA_DIR); it is never downloaded.")
    flags.DEFINE_bool("synthetic", False,
                      "Synthetic CIFAR-shaped images instead of CIFAR-10's training split.")
    flags.DEFINE_integer("synthetic_examples", cifar.SPLIT_SIZES["train"],
                         "Images of --synthetic data.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
    flags.DEFINE_integer("steps", 100, "Training steps timed per round.", lower_bound=1)
    flags.DEFINE_integer("rounds", 3, "Timed rounds after the warm-up round.", lower_bound=1)


def pipeline_images_per_second(dataset, images: int) -> Callable[[], float]:
    """A measure: images/s of one full pass over `dataset`, which yields `images` images."""
    from bn_keras.testing import timing

    def epoch():
        for _ in dataset:
            pass

    return lambda: images / timing.seconds_per_call(epoch, 1)


def training_images_per_second(bn: str, batches) -> Callable[[], float]:
    """A measure: images/s of LeNet's fit() over the in-memory `batches` (traced here once)."""
    import keras
    import tensorflow as tf

    from bn_keras import models
    from bn_keras.testing import timing

    model = models.lenet_cifar(bn)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    in_memory = tf.data.Dataset.from_tensor_slices(
        (tf.stack([x for x, _ in batches]), tf.stack([y for _, y in batches])))
    model.fit(in_memory.take(3), verbose=0, shuffle=False)  # trace
    images = sum(int(x.shape[0]) for x, _ in batches)

    def epoch():
        model.fit(in_memory, verbose=0, shuffle=False)

    return lambda: images / timing.seconds_per_call(epoch, 1)


def verdict(ratio: float) -> str:
    return "yes" if ratio >= TARGET else "NO"


def benchmark() -> None:
    from bn_keras.data import pipelines, sources
    from bn_keras.testing import timing

    examples = (sources.synthetic_images(FLAGS.synthetic_examples) if FLAGS.synthetic
                else sources.cifar10_examples("train", FLAGS.data_dir, download=False))
    images = len(examples)
    streams = {augment: pipelines.TrainingStream(examples, FLAGS.batch_size, seed=0,
                                                 augment=augment).epoch(0)
               for augment in PIPELINES}
    batches = [b for b in streams[False].take(FLAGS.steps) if b[0].shape[0] == FLAGS.batch_size]
    if not batches:
        raise InvalidSetting(f"--batch_size={FLAGS.batch_size} is more than the {images} images.")
    measures = {PIPELINES[augment]: pipeline_images_per_second(ds, images)
                for augment, ds in streams.items()}
    measures.update({bn: training_images_per_second(bn, batches) for bn in BN_MODES})
    samples = timing.interleaved(measures, FLAGS.rounds)
    rates = timing.medians(samples)

    print(f"batch {FLAGS.batch_size}, {'synthetic' if FLAGS.synthetic else 'CIFAR-10 train'} "
          f"({images} images), {len(batches)} training steps; {os.cpu_count()} CPU cores; "
          f"median of {FLAGS.rounds} interleaved rounds; target: pipeline >= {TARGET:g}x the "
          "training step, without and with augmentation\n")
    print("| consumer | images/s | min-max | pipeline / consumer, no aug | met, no aug "
          "| pipeline / consumer, crop + flip | met, crop + flip |")
    print("|---|---|---|---|---|---|---|")
    for name in PIPELINES.values():
        print(f"| {name} | {rates[name]:.0f} | {timing.spread(samples[name], '.0f')} | | | | |")
    for bn in BN_MODES:
        ratios = timing.medians({name: [p / c for p, c in zip(samples[name], samples[bn],
                                                               strict=True)]
                                 for name in PIPELINES.values()})
        cells = [f"{ratios[name]:.1f}x | {verdict(ratios[name])}" for name in PIPELINES.values()]
        print(f"| LeNet training step, bn={bn} | {rates[bn]:.0f} "
              f"| {timing.spread(samples[bn], '.0f')} | {' | '.join(cells)} |", flush=True)


TITLE = 'Does the input pipeline keep up? (benchmarks/bench_pipeline.py)'

if __name__ == "__main__":
    define_flags()
    cli.run_benchmark(TITLE, benchmark)
