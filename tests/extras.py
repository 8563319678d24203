"""Tests that need an optional extra of pyproject.toml: marked `extra`, skipped without it.

The README's install line installs `.[test]` only, and its test command must pass there:
a test that needs more skips with a reason naming the extra to install. CI's second stage
installs the extras and runs `python -m pytest -m extra`.
"""

import importlib.util

import pytest


def needs_extra(extra: str, *modules: str):
    """Marks a test (or, as `pytestmark`, a module) as needing `modules` from `.[extra]`."""

    def mark(item):
        for each in extra_marks(extra, *modules):
            item = each(item)
        return item

    return mark


def extra_marks(extra: str, *modules: str) -> list[pytest.MarkDecorator]:
    """`needs_extra`'s marks as a list, for one parameter: `pytest.param(..., marks=...)`."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    skip = pytest.mark.skipif(
        bool(missing), reason=f"needs {', '.join(missing)}: pip install -e '.[{extra}]'")
    return [skip, pytest.mark.extra]
