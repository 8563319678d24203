"""Is training ever input-bound? Pipeline images/s vs what LeNet's training step consumes.

Measures, in one process on the real CIFAR-10 (or --synthetic data):
- the training input pipeline alone (shuffle, optional augmentation, normalize,
  batch, prefetch), pulled as fast as it produces, after one warm-up epoch so
  the cache is filled;
- the images/s LeNet's training step consumes (model.fit on batches already in
  memory, so the pipeline costs nothing), for each BN mode.
Target: pipeline >= 5x the training step at batch 128.

    python benchmarks/bench_pipeline.py --data_dir=../shared/datasets/tensorflow_datasets
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bn_keras import data, models  # noqa: E402

TARGET = 5.0


def pipeline_images_per_second(dataset: tf.data.Dataset) -> float:
    for _ in dataset:  # warm-up epoch: fills the cache
        pass
    images, start = 0, time.perf_counter()
    for x, _ in dataset:
        images += int(x.shape[0])
    return images / (time.perf_counter() - start)


def training_images_per_second(bn: str, dataset: tf.data.Dataset, steps: int) -> float:
    model = models.lenet_cifar(bn)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = [b for b in dataset.take(steps)]
    in_memory = tf.data.Dataset.from_tensor_slices(
        (tf.stack([x for x, _ in batches]), tf.stack([y for _, y in batches])))
    model.fit(in_memory.take(3), verbose=0)  # trace
    start = time.perf_counter()
    model.fit(in_memory, verbose=0)
    return steps * int(batches[0][0].shape[0]) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default $TFDS_DATA_DIR)")
    parser.add_argument("--synthetic", action="store_true", help="use synthetic images")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="training steps to time")
    args = parser.parse_args()

    raw = (data.synthetic_images(45_000) if args.synthetic
           else data.load_cifar10("train", args.data_dir, download=False))
    pipelines = {augment: data.make_pipeline(raw, args.batch_size, training=True,
                                             augment=augment, seed=0)
                 for augment in (False, True)}
    print(f"batch {args.batch_size}, {'synthetic' if args.synthetic else 'CIFAR-10 train'}; "
          f"{os.cpu_count()} CPU cores\n")
    pipeline = {augment: pipeline_images_per_second(ds) for augment, ds in pipelines.items()}
    print("| consumer | images/s | pipeline / consumer (no aug) | with aug | target | met |")
    print("|---|---|---|---|---|---|")
    print(f"| input pipeline alone, no augmentation | {pipeline[False]:.0f} | | | | |")
    print(f"| input pipeline alone, crop + flip | {pipeline[True]:.0f} | | | | |")
    for bn in ("none", "keras", "custom"):
        consumed = training_images_per_second(bn, pipelines[False], args.steps)
        ratios = [pipeline[a] / consumed for a in (False, True)]
        print(f"| LeNet training step, bn={bn} | {consumed:.0f} | {ratios[0]:.1f}x | "
              f"{ratios[1]:.1f}x | >= {TARGET:g}x | {'yes' if min(ratios) >= TARGET else 'NO'} |",
              flush=True)


if __name__ == "__main__":
    main()
