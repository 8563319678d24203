"""Where examples come from: CIFAR-10 through tensorflow-datasets, and synthetic stand-ins.

A split is read once into memory as `Examples` (uint8 images [N, 32, 32, 3],
int64 labels; CIFAR-10's 60,000 images are 184 MB); bn_keras.data.pipelines
serves them as batches.

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

import numpy as np
import tensorflow as tf

from bn_keras.data.cifar import IMAGE_SHAPE, NUM_CLASSES, SPLITS
from bn_keras.errors import DamagedFile, NotFound

SEQUENCE_SHAPE = (128, 256)  # the tutorial's Conv1D example input
_CIFAR10_HOST = "www.cs.toronto.edu"  # where TFDS downloads CIFAR-10 from
_CLASS_SEED = 1234  # fixes what each synthetic class looks like

log = logging.getLogger(__name__)


class DataNotFoundError(NotFound):
    """The dataset is not prepared where TFDS looked and could not be downloaded."""


def resolve_data_dir(data_dir: str | None = None) -> str | None:
    """`data_dir` if given, else $TFDS_DATA_DIR, else None (TFDS' own default,
    ~/tensorflow_datasets)."""
    return data_dir or os.environ.get("TFDS_DATA_DIR") or None


def usable_data_dir(data_dir: str | None, download: bool) -> str | None:
    """The data directory to read: `data_dir` (else $TFDS_DATA_DIR) if it is one; a path
    that does not exist is replaced, with `download`, by TFDS' default (None), in a log
    line naming it. Raises DataNotFoundError for a file, or a missing path without
    `download`."""
    data_dir = resolve_data_dir(data_dir)
    if data_dir is None or os.path.isdir(data_dir):
        return data_dir
    if os.path.exists(data_dir):
        raise DataNotFoundError(f"data_dir={data_dir!r} is a file, not a directory: point it "
                                "at a TFDS data directory holding cifar10/.")
    if not download:
        raise DataNotFoundError(f"data directory {data_dir!r} does not exist.")
    default = os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    log.warning("note: data directory %s does not exist; using TFDS' default (%s), "
                "downloading CIFAR-10 there if needed.", data_dir, default)
    return None


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
    data_dir = usable_data_dir(data_dir, download)

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
    hint = ("Point `data_dir` or TFDS_DATA_DIR at a TFDS data directory holding "
            "cifar10/3.0.2.")
    nearby = _prepared_below(data_dir) if data_dir else None
    if nearby:
        hint = f"{nearby} holds cifar10/: pass data_dir={nearby}."
    return f"CIFAR-10 is not prepared in {where} and could not be downloaded ({reason}). {hint}"


def _prepared_below(data_dir: str) -> str | None:
    """A folder directly inside `data_dir` holding a prepared cifar10/ (a `data_dir` one level
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
    try:
        images, labels = dataset.batch(1 << 20).get_single_element()
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        where = os.path.join(resolve_data_dir(data_dir) or "~/tensorflow_datasets", "cifar10")
        raise DamagedFile(f"CIFAR-10's {split} files under {where}", _first_line(e),
                          "prepare the dataset again (`tfds build cifar10`), or restore "
                          "those files") from None
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


def cifar10_splits(data_dir: str | None = None, download: bool = True,
                   train_examples: int | None = None) -> dict[str, Examples]:
    """CIFAR-10's "train", "validation" and "test" splits in memory (`train_examples`: the
    first N training examples only)."""
    data_dir = usable_data_dir(data_dir, download)  # checked (and said) once, not per split
    splits = {split: cifar10_examples(split, data_dir, download) for split in SPLITS}
    splits["train"] = splits["train"].take(train_examples)
    return splits


def synthetic_splits(num_train: int, num_eval: int, seed: int = 0,
                     sequences: bool = False) -> dict[str, Examples]:
    """Synthetic "train", "validation" and "test" splits of CIFAR's (or, with `sequences`,
    the Conv1D example's) shapes, each drawn with its own seed."""
    source = synthetic_sequences if sequences else synthetic_images
    sizes = {"train": num_train, "validation": num_eval, "test": num_eval}
    return {split: source(n, seed=seed + i) for i, (split, n) in enumerate(sizes.items())}
