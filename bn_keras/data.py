"""tf.data input pipelines: CIFAR-10 from tensorflow-datasets, and synthetic stand-ins.

A split is read once into memory as `Examples` (uint8 images [N, 32, 32, 3],
int64 labels; CIFAR-10's 60,000 images are 184 MB), then served as batches of
normalized float32 images:

    training:   order of epoch e -> batch -> gather -> [crop + flip] -> normalize -> prefetch
    evaluation: batch (in order) -> normalize -> prefetch

The training order and augmentation of epoch e are drawn from (seed, e) alone,
with NumPy, when that epoch's pipeline is built (`TrainingStream.epoch`): not
from an iterator's history nor from TensorFlow's global seed. So epoch 7 is
the same batches whether a run got there without stopping or was killed in
epoch 7 and resumed.

Splits: "train" is `train[:45000]`, "validation" is `train[45000:]` (for model
selection and tuning), "test" is the official test set (final figures only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import socket
import textwrap
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from bn_keras.cifar import IMAGE_SHAPE, NUM_CLASSES, SPLITS
from bn_keras.cifar import MEAN as CIFAR10_MEAN
from bn_keras.cifar import STD as CIFAR10_STD

AUTOTUNE = tf.data.AUTOTUNE
SEQUENCE_SHAPE = (128, 256)  # the tutorial's Conv1D example input
_CIFAR10_HOST = "www.cs.toronto.edu"  # where TFDS downloads CIFAR-10 from
_CLASS_SEED = 1234  # fixes what each synthetic class looks like

log = logging.getLogger(__name__)


class DataNotFoundError(FileNotFoundError):
    """The dataset is not prepared where TFDS looked and could not be downloaded."""


def resolve_data_dir(data_dir: str | None = None) -> str | None:
    """`data_dir` if given, else $TFDS_DATA_DIR, else None (TFDS' own default,
    ~/tensorflow_datasets)."""
    return data_dir or os.environ.get("TFDS_DATA_DIR") or None


def load_cifar10(split: str, data_dir: str | None = None, download: bool = True) -> tf.data.Dataset:
    """The raw (uint8 image, label) examples of one split of CIFAR-10.

    Reads a prepared copy from `data_dir` / $TFDS_DATA_DIR; if there is none
    and `download` is set, TFDS downloads and prepares it (needs internet).
    A `data_dir` that does not exist is used when present only: with `download`,
    TFDS' default directory is used instead (one command serves a machine with a
    prepared copy and one with internet), and a log line says so. Raises
    DataNotFoundError, in one line, when neither works.
    """
    import tensorflow_datasets as tfds

    if split not in SPLITS:
        raise ValueError(f"Unknown split={split!r}; expected one of {', '.join(SPLITS)}.")
    data_dir = resolve_data_dir(data_dir)
    if data_dir is not None and not os.path.isdir(data_dir):
        if not download:
            raise DataNotFoundError(f"data directory {data_dir!r} does not exist.")
        log.warning("note: data directory %s does not exist; using TFDS' default "
                    "(~/tensorflow_datasets), downloading CIFAR-10 there if needed.", data_dir)
        data_dir = None

    def load(download_now: bool) -> tf.data.Dataset:
        return tfds.load("cifar10", split=SPLITS[split], data_dir=data_dir, as_supervised=True,
                         shuffle_files=False, download=download_now)

    where = os.path.join(data_dir or "~/tensorflow_datasets", "cifar10")
    try:
        with _tfds_warnings_hidden():  # a failure here only means "not prepared": said below
            return load(download_now=False)  # the prepared copy, offline
    except Exception as e:  # noqa: BLE001 - TFDS raises many types; all mean "not prepared"
        if not download:
            raise DataNotFoundError(_missing_message(where, "downloading is off", data_dir)
                                    ) from None
        missing = e
    if not _can_reach(_CIFAR10_HOST):
        reason = f"no network connection to {_CIFAR10_HOST}"
        raise DataNotFoundError(_missing_message(where, reason, data_dir)) from missing
    try:
        return load(download_now=True)
    except Exception as e:  # noqa: BLE001
        raise DataNotFoundError(_missing_message(where, _first_line(e), data_dir)) from None


@contextlib.contextmanager
def _tfds_warnings_hidden():
    """TFDS' absl-logged warnings (e.g. "Variant folder ... has no dataset_info.json") off."""
    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(min(level, absl_logging.ERROR))
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


def _can_reach(host: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to host:443 opens: fails fast offline, where TFDS retries
    for minutes."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return textwrap.shorten(line, 200, placeholder=" ...")


def _missing_message(where: str, reason: str, data_dir: str | None) -> str:
    hint = ("Point --data_dir or TFDS_DATA_DIR at a TFDS data directory holding "
            "cifar10/3.0.2.")
    nearby = _prepared_below(data_dir) if data_dir else None
    if nearby:
        hint = f"{nearby} holds cifar10/: pass --data_dir={nearby}."
    return f"CIFAR-10 is not prepared in {where} and could not be downloaded ({reason}). {hint}"


def _prepared_below(data_dir: str) -> str | None:
    """A folder directly inside `data_dir` holding a prepared cifar10/ (a --data_dir one level
    too high), or None."""
    try:
        names = sorted(os.listdir(data_dir))
    except OSError:
        return None
    for name in names:
        if glob.glob(os.path.join(data_dir, name, "cifar10", "*", "dataset_info.json")):
            return os.path.join(data_dir, name)
    return None


@dataclasses.dataclass(frozen=True)
class Examples:
    """One split in memory: model inputs (uint8 images, or float32 sequences) and int64 labels."""

    inputs: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, count: int | None) -> Examples:
        """The first `count` examples (all of them for None)."""
        return self if count is None else Examples(self.inputs[:count], self.labels[:count])


def cifar10_examples(split: str, data_dir: str | None = None, download: bool = True) -> Examples:
    """One split of CIFAR-10, read completely into memory (see `load_cifar10`)."""
    dataset = load_cifar10(split, data_dir, download)
    images, labels = dataset.batch(1 << 20).get_single_element()
    return Examples(images.numpy(), labels.numpy().astype(np.int64))


def synthetic_images(num_examples: int, seed: int = 0) -> Examples:
    """CIFAR-shaped uint8 images whose class shows in their colours.

    Each class has its own mean colour, plus noise, so a model can learn it
    and smoke tests can see the loss fall.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples)
    # The class colours are fixed, so splits drawn with different seeds agree.
    palette = np.random.default_rng(_CLASS_SEED).uniform(40, 215, size=(NUM_CLASSES, 1, 1, 3))
    images = palette[labels] + rng.normal(0, 40, size=(num_examples, *IMAGE_SHAPE))
    return Examples(np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64))


def synthetic_sequences(num_examples: int, seed: int = 0) -> Examples:
    """float32 [128, 256] sequences for the Conv1D example, class in the mean."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples)
    offsets = np.random.default_rng(_CLASS_SEED).normal(size=(NUM_CLASSES, 1, SEQUENCE_SHAPE[1]))
    x = offsets[labels] + rng.normal(size=(num_examples, *SEQUENCE_SHAPE))
    return Examples(x.astype(np.float32), labels.astype(np.int64))


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

    def draws(self, epoch: int) -> dict[str, np.ndarray]:
        """Epoch `epoch`'s order and, with augmentation, crop offsets and flips."""
        rng = epoch_rng(self.seed, epoch)
        draws = {"order": rng.permutation(self.num_examples)}
        if self.augment:
            draws["offsets"] = rng.integers(0, 9, size=(self.num_examples, 2), dtype=np.int32)
            draws["flips"] = rng.random(self.num_examples) < 0.5
        return draws

    def epoch(self, epoch: int) -> tf.data.Dataset:
        """The batches of epoch `epoch` (0-based): `(float32 inputs, int64 labels)`."""
        draws = self.draws(epoch)
        inputs, labels = self._inputs, self._labels
        augment, preprocess = self.augment, self.preprocess

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


def pipelines(splits: dict[str, Examples], batch_size: int, eval_batch_size: int | None = None,
              seed: int = 0, augment: bool = False, drop_remainder: bool = False,
              preprocess: Callable[[tf.Tensor], tf.Tensor] | None = normalize_images) -> dict:
    """{"train": TrainingStream, "validation": Dataset, "test": Dataset} over in-memory splits."""
    result: dict = {"train": TrainingStream(splits["train"], batch_size, seed, augment,
                                            drop_remainder, preprocess)}
    for split in ("validation", "test"):
        result[split] = evaluation_pipeline(splits[split], eval_batch_size or batch_size,
                                            preprocess)
    return result


def cifar10_pipelines(batch_size: int, data_dir: str | None = None, augment: bool = False,
                      seed: int = 0, drop_remainder: bool = False, download: bool = True,
                      train_examples: int | None = None, eval_batch_size: int | None = None
                      ) -> dict:
    """Train, validation and test pipelines of CIFAR-10 (`train_examples`: the first N only)."""
    splits = {split: cifar10_examples(split, data_dir, download) for split in SPLITS}
    splits["train"] = splits["train"].take(train_examples)
    return pipelines(splits, batch_size, eval_batch_size, seed, augment, drop_remainder)


def synthetic_pipelines(batch_size: int, num_train: int = 512, num_eval: int = 128,
                        seed: int = 0, drop_remainder: bool = False, augment: bool = False,
                        sequences: bool = False, eval_batch_size: int | None = None) -> dict:
    """Train/validation/test pipelines over synthetic data of CIFAR's (or the Conv1D
    example's) shapes."""
    source = synthetic_sequences if sequences else synthetic_images
    sizes = {"train": num_train, "validation": num_eval, "test": num_eval}
    splits = {split: source(n, seed=seed + i) for i, (split, n) in enumerate(sizes.items())}
    return pipelines(splits, batch_size, eval_batch_size, seed, augment and not sequences,
                     drop_remainder, preprocess=None if sequences else normalize_images)
