"""tf.data input pipelines over examples in memory (bn_keras.data.sources).

Batches of normalized float32 images:

    training:   order of epoch e -> batch -> gather -> [crop + flip] -> normalize -> prefetch
    evaluation: batch (in order) -> normalize -> prefetch

The training order and augmentation of epoch e are drawn from (seed, e) alone,
with NumPy, when that epoch's pipeline is built (`TrainingStream.epoch`): not
from an iterator's history nor from TensorFlow's global seed. So epoch 7 is
the same batches whether a run got there without stopping or was killed in
epoch 7 and resumed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from bn_keras.data import sources
from bn_keras.data.cifar import IMAGE_SHAPE
from bn_keras.data.cifar import MEAN as CIFAR10_MEAN
from bn_keras.data.cifar import STD as CIFAR10_STD
from bn_keras.data.sources import Examples

AUTOTUNE = tf.data.AUTOTUNE


def normalize_images(images: tf.Tensor) -> tf.Tensor:
    """uint8 [.., 32, 32, 3] pixels -> float32, per-channel standardized with CIFAR-10's
    statistics."""
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(CIFAR10_MEAN)) / tf.constant(CIFAR10_STD)


def augment_images(images: tf.Tensor, offsets: tf.Tensor, flips: tf.Tensor) -> tf.Tensor:
    """Per image: the 32x32 crop at `offsets` (row, col in [0, 8]) of the image padded by 4
    pixels (reflected), mirrored where `flips` is true. Vectorized over the batch
    [N, 32, 32, 3]; the random draws come in as arguments (see `TrainingStream`)."""
    height, width = IMAGE_SHAPE[0], IMAGE_SHAPE[1]
    n = tf.shape(images)[0]
    padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT")
    offsets = tf.cast(offsets, tf.int32)
    rows = offsets[:, :1] + tf.range(height)[None, :]  # [N, 32]
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    # A flip reads the columns backwards.
    cols = tf.where(flips[:, None], tf.reverse(cols, axis=[1]), cols)
    # One gather of whole pixels: index of (image, row, col) in the padded batch.
    side = height + 8
    pixel = (tf.range(n)[:, None, None] * side + rows[:, :, None]) * (width + 8) + cols[:, None, :]
    pixels = tf.reshape(padded, [-1, IMAGE_SHAPE[2]])
    return tf.gather(pixels, pixel)  # [N, 32, 32, 3]


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The random generator of one epoch of one run: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch])


class TrainingStream:
    """Training batches, epoch by epoch, each epoch a pure function of (seed, epoch).

    `epoch(e)` builds epoch e's pipeline: a permutation of the examples and, with
    `augment`, a crop offset and flip per example, all drawn from
    `epoch_rng(seed, e)`. Batches then gather their examples from memory.
    """

    def __init__(self, examples: Examples, batch_size: int, seed: int = 0,
                 augment: bool = False, drop_remainder: bool = False,
                 preprocess: Callable[[tf.Tensor], tf.Tensor] | None = normalize_images):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        if drop_remainder and len(examples) < batch_size:
            raise ValueError(f"{len(examples)} training examples do not fill one batch of "
                             f"{batch_size}.")
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.augment, self.drop_remainder, self.preprocess = augment, drop_remainder, preprocess
        self._inputs = tf.constant(examples.inputs)
        self._labels = tf.constant(examples.labels)

    @property
    def num_examples(self) -> int:
        return len(self.examples)

    @property
    def steps_per_epoch(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full + (1 if rest and not self.drop_remainder else 0)

    @property
    def examples_per_epoch(self) -> int:
        return min(self.num_examples, self.steps_per_epoch * self.batch_size)

    def draws(self, epoch: int, augment: bool | None = None) -> dict[str, np.ndarray]:
        """Epoch `epoch`'s order and, with augmentation, crop offsets and flips."""
        rng = epoch_rng(self.seed, epoch)
        draws = {"order": rng.permutation(self.num_examples)}
        if self.augment if augment is None else augment:
            draws["offsets"] = rng.integers(0, 9, size=(self.num_examples, 2), dtype=np.int32)
            draws["flips"] = rng.random(self.num_examples) < 0.5
        return draws

    def epoch(self, epoch: int, augment: bool | None = None) -> tf.data.Dataset:
        """The batches of epoch `epoch` (0-based): `(float32 inputs, int64 labels)`;
        `augment=False`: the same batches without augmentation (for re-estimating BN
        statistics: the training images as they are)."""
        augment = self.augment if augment is None else augment
        draws = self.draws(epoch, augment)
        inputs, labels = self._inputs, self._labels
        preprocess = self.preprocess

        def batch_of_examples(batch):  # one map per batch: tf.data's overhead is per call
            x = tf.gather(inputs, batch["order"])
            if augment:
                x = augment_images(x, batch["offsets"], batch["flips"])
            if preprocess is not None:
                x = preprocess(x)
            return x, tf.gather(labels, batch["order"])

        ds = tf.data.Dataset.from_tensor_slices(draws).batch(
            self.batch_size, drop_remainder=self.drop_remainder)
        return ds.map(batch_of_examples, num_parallel_calls=AUTOTUNE,
                      deterministic=True).prefetch(AUTOTUNE)

    def epochs(self, first: int, stop: int) -> tf.data.Dataset:
        """Epochs first .. stop - 1 one after another, for code that iterates across epochs
        (with `steps_per_epoch`; Keras' steps_per_execution must then divide it)."""
        ds = self.epoch(first)
        for e in range(first + 1, stop):
            ds = ds.concatenate(self.epoch(e))
        return ds


def evaluation_pipeline(examples: Examples, batch_size: int,
                        preprocess: Callable[[tf.Tensor], tf.Tensor] | None = normalize_images
                        ) -> tf.data.Dataset:
    """Batches of `examples` in their order, never augmented."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    ds = tf.data.Dataset.from_tensor_slices((examples.inputs, examples.labels)).batch(batch_size)
    if preprocess is not None:
        ds = ds.map(lambda x, y: (preprocess(x), y), num_parallel_calls=AUTOTUNE,
                    deterministic=True)
    return ds.prefetch(AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class Pipelines:
    """A run's data: training epochs, and validation and test batches in a fixed order."""

    train: TrainingStream
    validation: tf.data.Dataset
    test: tf.data.Dataset


def pipelines(splits: dict[str, Examples], batch_size: int, eval_batch_size: int | None = None,
              seed: int = 0, augment: bool = False, drop_remainder: bool = False,
              preprocess: Callable[[tf.Tensor], tf.Tensor] | None = normalize_images
              ) -> Pipelines:
    """The pipelines over in-memory "train", "validation" and "test" splits."""
    def evaluation(split):
        return evaluation_pipeline(splits[split], eval_batch_size or batch_size, preprocess)

    return Pipelines(TrainingStream(splits["train"], batch_size, seed, augment, drop_remainder,
                                    preprocess), evaluation("validation"), evaluation("test"))


def cifar10_pipelines(batch_size: int, data_dir: str | None = None, augment: bool = False,
                      seed: int = 0, drop_remainder: bool = False, download: bool = True,
                      train_examples: int | None = None, eval_batch_size: int | None = None
                      ) -> Pipelines:
    """Train, validation and test pipelines of CIFAR-10 (`train_examples`: the first N only)."""
    return pipelines(sources.cifar10_splits(data_dir, download, train_examples), batch_size,
                     eval_batch_size, seed, augment, drop_remainder)


def synthetic_pipelines(batch_size: int, num_train: int = 512, num_eval: int = 128,
                        seed: int = 0, drop_remainder: bool = False, augment: bool = False,
                        sequences: bool = False, eval_batch_size: int | None = None
                        ) -> Pipelines:
    """Train/validation/test pipelines over synthetic data of CIFAR's (or the Conv1D
    example's) shapes."""
    return pipelines(sources.synthetic_splits(num_train, num_eval, seed, sequences), batch_size,
                     eval_batch_size, seed, augment and not sequences, drop_remainder,
                     preprocess=None if sequences else normalize_images)
