"""Package exports imported on first use, so that a light submodule (a config read at start-up)
does not drag its package's heavy dependencies (Lightning, Ray) in with it."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` (PEP 562) for ``package``: name -> the module that defines it."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
