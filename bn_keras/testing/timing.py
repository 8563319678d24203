"""Side-by-side timing for the benchmarks: candidates measured in turn, medians reported.

On a shared machine throughput drifts by +-50% over minutes; measuring the
candidates interleaved, round after round, exposes them to the same drift, so
their ratio stays meaningful where absolute figures do not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
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
