"""Side-by-side timing for the benchmarks: candidates measured in turn, medians reported.

On a shared machine throughput drifts by +-50% over minutes; measuring the
candidates interleaved, round after round, exposes them to the same drift, so
their ratio stays meaningful where absolute figures do not.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any


def seconds_per_call(fn: Callable[[], Any], iterations: int,
                     sync: Callable[[Any], Any] | None = None) -> float:
    """Mean wall seconds of `fn()` over `iterations` calls; `sync(result)` waits for the
    last result (e.g. `lambda t: t.numpy()`) so asynchronous work is counted."""
    start = time.perf_counter()
    result = None
    for _ in range(iterations):
        result = fn()
    if sync is not None:
        sync(result)
    return (time.perf_counter() - start) / iterations


def interleaved(measures: Mapping[str, Callable[[], float]], rounds: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Calls every measure once per round, in turn, after `warmup` unrecorded rounds;
    returns each one's recorded values."""
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for round_ in range(warmup + rounds):
        for name, measure in measures.items():
            value = measure()
            if round_ >= warmup:
                samples[name].append(value)
    return samples


def medians(samples: Mapping[str, list[float]]) -> dict[str, float]:
    """The median of each candidate's values."""
    return {name: float(statistics.median(values)) for name, values in samples.items()}


def interleaved_medians(measures: Mapping[str, Callable[[], float]], rounds: int,
                        warmup: int = 1) -> dict[str, float]:
    """`medians(interleaved(...))`: the usual benchmark figure."""
    return medians(interleaved(measures, rounds, warmup))


def spread(values: list[float], format_spec: str = ".4g") -> str:
    """'min-max' of a candidate's values, for tables that show the noise."""
    return f"{min(values):{format_spec}}-{max(values):{format_spec}}"


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def report_to(path: str | None, title: str) -> Iterator[None]:
    """Everything printed inside also goes to the Markdown report `path` (if given), under
    a header naming the command that printed it and what it was measured on
    (bn_keras.environment), written atomically at the end."""
    if not path:
        yield
        return
    from bn_keras import atomic, environment

    captured = io.StringIO()
    command = shlex.join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
        yield
    atomic.write_text(path, f"# {title}\n\nCommand: `{command}`\n\nMeasured on: "
                            f"{environment.summary()}.\n\n{as_markdown(captured.getvalue())}")
    print(f"wrote {path}")


def as_markdown(printed: str) -> str:
    """A benchmark's printed output as Markdown: its tables (lines starting with "|") as
    they are, every other run of lines (progress, captions) in a text block."""
    blocks: list[tuple[bool, list[str]]] = []
    for line in printed.splitlines():
        is_table = line.startswith("|")
        if not line.strip():
            blocks.append((False, []))  # a blank line ends a block
        elif blocks and blocks[-1][0] == is_table and blocks[-1][1]:
            blocks[-1][1].append(line)
        else:
            blocks.append((is_table, [line]))
    parts = ["\n".join(lines) if is_table else "```text\n" + "\n".join(lines) + "\n```"
             for is_table, lines in blocks if lines]
    return "\n\n".join(parts) + "\n"
