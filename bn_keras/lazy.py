"""Names of a package loaded from their modules on first use (PEP 562).

A package that lists its public names here imports nothing heavy itself: `import
bn_keras` (or `bn_keras.models`) costs nothing until a name is used, so that scripts can
quiet TensorFlow before anything imports it, and the choices a configuration is checked
against can be read without Keras.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def exports(package: str, namespace: dict[str, Any], names: Mapping[str, str],
            submodules: Iterable[str] = ()
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package` (`namespace`: its globals()): each of
    `names` (public name -> the module defining it) is imported from its module when first
    read, and each of `submodules` is the package's sub-module of that name."""
    submodules = tuple(submodules)

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*namespace, *names, *submodules})

    return __getattr__, __dir__
