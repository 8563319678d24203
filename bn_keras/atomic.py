"""Files written whole or not at all: a temporary file beside the target, then a rename.

A run killed mid-write (Ctrl-C, SIGKILL, a full disk) leaves the previous
version of the file, never half of a new one.
"""

from __future__ import annotations

import json
import os
from typing import Any


def write_text(path: str, text: str) -> str:
    """Writes `text` to `path` atomically; returns `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_json(path: str, value: Any, indent: int | None = 2) -> str:
    """Writes `value` as JSON (keys sorted, non-JSON values as strings) atomically."""
    return write_text(path, json.dumps(value, indent=indent, sort_keys=True, default=str) + "\n")


def read_json(path: str, default: Any = None) -> Any:
    """The JSON value in `path`, or `default` when the file does not exist."""
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)
