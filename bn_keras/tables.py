"""Result tables: one list of row dicts, written as Markdown and CSV side by side."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bn_keras import atomic


def mean_std(values: Sequence[float], digits: int = 4) -> str:
    """'mean ± sample std' of the finite values, with `digits` decimals (thousands
    separated where there are none); '(n=k)' when some were NaN or missing."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return "-"
    form = f",.{digits}f" if digits == 0 else f".{digits}f"
    text = (f"{np.mean(finite):{form}} ± {np.std(finite, ddof=1):{form}}" if len(finite) > 1
            else f"{finite[0]:{form}}")
    return text + (f" (n={len(finite)})" if len(finite) < len(values) else "")


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown_table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub Markdown table of `columns` taken from each row."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})
    return buffer.getvalue()


def write_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], directory: str,
                stem: str, preamble: str = "", postscript: str = "") -> tuple[str, str]:
    """Writes DIRECTORY/STEM.md (preamble + table + postscript) and DIRECTORY/STEM.csv, each
    atomically; returns both paths."""
    os.makedirs(directory, exist_ok=True)
    md_path = os.path.join(directory, f"{stem}.md")
    csv_path = os.path.join(directory, f"{stem}.csv")
    atomic.write_text(md_path, preamble + markdown_table(rows, columns) + postscript)
    atomic.write_text(csv_path, csv_text(rows, columns))
    return md_path, csv_path
