"""Lazy package attributes: ``import segearth_geo.model`` must not import torch until a name is used."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) on first use of ``name``.

    The value is cached in the package namespace. A name that is also a submodule's name
    (``evaluation.evaluate``) must still be bound eagerly by the package: importing the submodule
    first sets the package attribute to the module, and ``__getattr__`` is then never asked.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value
        return value

    return __getattr__
