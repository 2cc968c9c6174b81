"""Names a package exports but loads on first use (PEP 562).

A package whose modules pull in heavy libraries (PyTorch, Flower) keeps them out of
the processes that do not use them: ``veil.train``'s registry and privacy cards are
read without PyTorch, ``veil.federated``'s accounting without Flower. The package
imports the names under ``TYPE_CHECKING`` for type checkers and binds the two
functions returned here as its ``__getattr__`` and ``__dir__``.

>>> getattr_, dir_ = lazy_exports("veil", {"dumps": "veil._io"}, {})
>>> getattr_("dumps").__module__
'veil._io'
>>> "dumps" in dir_()
True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, where: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose name ``n`` lives in ``where[n]``.

    Args:
        package: The package's ``__name__`` (for the error message).
        where: Each lazily exported name and the module that defines it.
        namespace: The package's ``globals()``: a loaded name is kept there, so that it
            loads once.
    """

    def getattr_(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *where})

    return getattr_, dir_
