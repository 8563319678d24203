"""tf.data input pipelines: CIFAR-10 from tensorflow-datasets, and synthetic stand-ins.

Every source yields `(image uint8 [32, 32, 3], label int64)` examples, like
`tfds.load("cifar10", as_supervised=True)`; `make_pipeline` turns one into
batches of normalized float32 images:

    cache (uint8) -> seeded shuffle -> [augment] -> normalize -> batch -> prefetch

Splits: "train" is `train[:45000]`, "validation" is `train[45000:]` (for model
selection and tuning), "test" is the official test set (final figures only).
"""

from __future__ import annotations

import os
import socket
from typing import Callable

import numpy as np
import tensorflow as tf

from bn_keras.cifar import IMAGE_SHAPE, NUM_CLASSES, SPLITS
from bn_keras.cifar import MEAN as CIFAR10_MEAN
from bn_keras.cifar import STD as CIFAR10_STD

AUTOTUNE = tf.data.AUTOTUNE
SEQUENCE_SHAPE = (128, 256)  # the tutorial's Conv1D example input
_CIFAR10_HOST = "www.cs.toronto.edu"  # where TFDS downloads CIFAR-10 from
_CLASS_SEED = 1234  # fixes what each synthetic class looks like


class DataNotFoundError(FileNotFoundError):
    """The dataset is not prepared where TFDS looked and could not be downloaded."""


def resolve_data_dir(data_dir: str | None = None) -> str | None:
    """`data_dir` if given, else $TFDS_DATA_DIR, else None (TFDS' own default, ~/tensorflow_datasets)."""
    return data_dir or os.environ.get("TFDS_DATA_DIR") or None


def load_cifar10(split: str, data_dir: str | None = None, download: bool = True) -> tf.data.Dataset:
    """The raw (uint8 image, label) examples of one split of CIFAR-10.

    Reads a prepared copy from `data_dir` / $TFDS_DATA_DIR; if there is none
    and `download` is set, TFDS downloads and prepares it (needs internet).
    Raises DataNotFoundError, in one line, when neither works.
    """
    import tensorflow_datasets as tfds

    if split not in SPLITS:
        raise ValueError(f"Unknown split={split!r}; expected one of {', '.join(SPLITS)}.")
    data_dir = resolve_data_dir(data_dir)
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DataNotFoundError(f"data directory {data_dir!r} does not exist.")
    def load(download_now: bool) -> tf.data.Dataset:
        return tfds.load("cifar10", split=SPLITS[split], data_dir=data_dir, as_supervised=True,
                         shuffle_files=False, download=download_now)

    where = os.path.join(data_dir or "~/tensorflow_datasets", "cifar10")
    try:
        return load(download_now=False)  # the prepared copy, offline
    except Exception as e:  # noqa: BLE001 - TFDS raises many types; all mean "not prepared"
        if not download:
            raise DataNotFoundError(_missing_message(where, "downloading is off")) from None
        missing = e
    if not _can_reach(_CIFAR10_HOST):
        reason = f"no network connection to {_CIFAR10_HOST}: {_first_line(missing)}"
        raise DataNotFoundError(_missing_message(where, reason)) from None
    try:
        return load(download_now=True)
    except Exception as e:  # noqa: BLE001
        raise DataNotFoundError(_missing_message(where, _first_line(e))) from None


def _can_reach(host: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to host:443 opens: fails fast offline, where TFDS retries for minutes."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _missing_message(where: str, reason: str) -> str:
    return (f"CIFAR-10 is not prepared in {where} and could not be downloaded ({reason}). "
            "Point --data_dir or TFDS_DATA_DIR at a TFDS data directory holding cifar10/3.0.2, "
            "e.g. ../shared/datasets/tensorflow_datasets.")


def synthetic_images(num_examples: int, seed: int = 0) -> tf.data.Dataset:
    """CIFAR-shaped (uint8 image, label) examples whose class shows in the colours.

    Each class has its own mean colour, plus noise, so a model can learn it
    and smoke tests can see the loss fall.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples)
    # The class colours are fixed, so splits drawn with different seeds agree.
    palette = np.random.default_rng(_CLASS_SEED).uniform(40, 215, size=(NUM_CLASSES, 1, 1, 3))
    images = palette[labels] + rng.normal(0, 40, size=(num_examples, *IMAGE_SHAPE))
    images = np.clip(images, 0, 255).astype(np.uint8)
    return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))


def synthetic_sequences(num_examples: int, seed: int = 0) -> tf.data.Dataset:
    """(float32 [128, 256] sequence, label) examples for the Conv1D example, class in the mean."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples)
    offsets = np.random.default_rng(_CLASS_SEED).normal(size=(NUM_CLASSES, 1, SEQUENCE_SHAPE[1]))
    x = offsets[labels] + rng.normal(size=(num_examples, *SEQUENCE_SHAPE))
    return tf.data.Dataset.from_tensor_slices((x.astype(np.float32), labels.astype(np.int64)))


def normalize_images(images: tf.Tensor) -> tf.Tensor:
    """uint8 [.., 32, 32, 3] pixels -> float32, per-channel standardized with CIFAR-10's statistics."""
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(CIFAR10_MEAN)) / tf.constant(CIFAR10_STD)


def augment_images(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Per image: a random 32x32 crop of it padded by 4 pixels (reflected), and a random
    horizontal flip. Vectorized over the batch [N, 32, 32, 3]; `seed` is a stateless seed [2]."""
    height, width = IMAGE_SHAPE[0], IMAGE_SHAPE[1]
    n = tf.shape(images)[0]
    padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([2, n], seed, minval=0, maxval=9, dtype=tf.int32)
    flips = tf.random.stateless_uniform([n], tf.random.experimental.stateless_fold_in(seed, 1)) < 0.5
    rows = offsets[0][:, None] + tf.range(height)[None, :]  # [N, 32]
    cols = offsets[1][:, None] + tf.range(width)[None, :]
    cols = tf.where(flips[:, None], tf.reverse(cols, axis=[1]), cols)  # a flip reads columns backwards
    # One gather of whole pixels: index of (image, row, col) in the padded batch.
    side = height + 8
    pixel = (tf.range(n)[:, None, None] * side + rows[:, :, None]) * (width + 8) + cols[:, None, :]
    pixels = tf.reshape(padded, [-1, IMAGE_SHAPE[2]])
    return tf.gather(pixels, pixel)  # [N, 32, 32, 3]


def fill_cache(cached: tf.data.Dataset) -> None:
    """Reads a `.cache()`d dataset once, completely, so its in-memory cache is final.

    tf.data keeps a partly read cache only until the next pass; but when a partial
    read (a probe batch) is followed by a pass inside a tf.function, as Keras runs
    `steps_per_execution > 1`, that pass can finalize the cache truncated: measured
    here, 27 of 1,000 test batches, in every later pass. One full read up front
    (CIFAR-10's 60k images: about a second) makes every later reader see all of it.
    """
    for _ in cached.batch(4096):
        pass


def make_pipeline(examples: tf.data.Dataset, batch_size: int, training: bool,
                  augment: bool = False, seed: int = 0, drop_remainder: bool = False,
                  cache: bool = True, shuffle_buffer: int = 50_000,
                  preprocess: Callable[[tf.Tensor], tf.Tensor] | None = normalize_images,
                  ) -> tf.data.Dataset:
    """Batches of (float32 inputs, int64 labels) from (raw input, label) examples.

    Training pipelines shuffle with `seed` (a new order every epoch, the same
    sequence of orders for the same seed) and, with `augment`, crop and flip
    with seeds drawn from the same `seed`, so two runs see identical batches.
    Evaluation pipelines keep the order and never augment. `preprocess` maps a
    raw input to model input (CIFAR normalization by default; None keeps it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    ds = examples
    if cache:
        ds = examples.cache()
        fill_cache(ds)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    # Batch first, then augment and preprocess whole batches: vectorized ops per batch.
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if training and augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: (augment_images(batch[0], s), batch[1]),
            num_parallel_calls=AUTOTUNE, deterministic=True)
    if preprocess is not None:
        ds = ds.map(lambda x, y: (preprocess(x), y), num_parallel_calls=AUTOTUNE,
                    deterministic=True)
    return ds.prefetch(AUTOTUNE)


def cifar10_pipelines(batch_size: int, data_dir: str | None = None, augment: bool = False,
                      seed: int = 0, drop_remainder: bool = False, download: bool = True,
                      train_examples: int | None = None) -> dict[str, tf.data.Dataset]:
    """Train, validation and test pipelines of CIFAR-10 (`train_examples`: the first N only)."""
    pipelines = {}
    for split in SPLITS:
        examples = load_cifar10(split, data_dir, download)
        if split == "train" and train_examples is not None:
            examples = examples.take(train_examples)
        pipelines[split] = make_pipeline(examples, batch_size, training=split == "train",
                                         augment=augment, seed=seed,
                                         drop_remainder=drop_remainder and split == "train")
    return pipelines


def synthetic_pipelines(batch_size: int, num_train: int = 512, num_eval: int = 128,
                        seed: int = 0, drop_remainder: bool = False, augment: bool = False,
                        sequences: bool = False) -> dict[str, tf.data.Dataset]:
    """Train/validation/test pipelines over synthetic data of CIFAR's (or the Conv1D example's) shapes."""
    source = synthetic_sequences if sequences else synthetic_images
    sizes = {"train": num_train, "validation": num_eval, "test": num_eval}
    return {split: make_pipeline(source(n, seed=seed + i), batch_size, training=split == "train",
                                 augment=augment and not sequences, seed=seed,
                                 drop_remainder=drop_remainder and split == "train",
                                 preprocess=None if sequences else normalize_images)
            for i, (split, n) in enumerate(sizes.items())}
