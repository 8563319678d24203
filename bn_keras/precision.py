"""Mixed precision: Keras' global dtype policy for the models built inside a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy `name` (float32, mixed_float16, mixed_bfloat16) for the
    models built inside; the previous one afterwards, however the block ends."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
