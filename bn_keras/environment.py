"""What a measurement was made on, in one line, for the reports that print figures.

Accuracies repeat to the last digit only on the same CPU model and library versions
(other CPUs take other kernel paths and round differently), and speeds depend on the
machine: every report says once where it was measured, from this line.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform


def cpu_model() -> str:
    """The CPU's model name, as the OS reports it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(packages: tuple[str, ...] = ("tensorflow", "keras")) -> str:
    found = []
    for name in packages:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def summary(packages: tuple[str, ...] = ("tensorflow", "keras")) -> str:
    """E.g. "Intel(R) Xeon(R) Processor, 2 cores; Python 3.11.7, tensorflow 2.21.0, keras
    3.15.1; 2026-12-02"."""
    return (f"{cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"{versions(packages)}; {datetime.date.today().isoformat()}")
