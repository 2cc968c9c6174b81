"""Typed benchmark results, and the tables each result draws of itself.

Every ``run_*_benchmark`` returns a frozen dataclass deriving from
:class:`BenchResult`. Its ``to_dict()`` is the JSON report that ``veil bench
NAME --output`` writes, key for key: docs/benchmarks.md compares these files
across releases, so field names are the JSON keys (``metadata={"key": ...}``
where a key is no identifier) and values keep their conventions (an infinite
epsilon stays what the benchmark stored; the JSON writer spells it). Parts that
are free-form by nature (machine facts, goals keyed by model, measured phases)
stay mappings.

``view()`` describes the printed form as data: :class:`Table` (a title,
:class:`Column` with a header and a format, rows of raw values) and
:class:`Note` lines, in order. One function at the command line draws any
result, so no renderer indexes a report by hand.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BenchResult",
    "Column",
    "Note",
    "Table",
    "View",
    "fixed",
    "percent",
    "ratio",
    "to_plain",
    "verdict",
]


def fixed(spec: str) -> Callable[[Any], str]:
    """A format for a column: ``fixed(".3f")`` formats a value with that spec."""
    return lambda value: format(value, spec)


def ratio(value: float) -> str:
    """A ratio such as ``1.25x``."""
    return f"{value:.2f}x"


def percent(value: float) -> str:
    """A share as a percentage with two decimals."""
    return f"{value:.2%}"


def verdict(flag: bool | None) -> str:
    """A goal's state: met, NOT met, or n/a where it was not measured."""
    return "n/a" if flag is None else ("met" if flag else "NOT met")


@dataclass(frozen=True)
class Column:
    """A table column: its header, how a value is formatted, and its alignment.

    A cell holding ``None`` prints ``-``; a cell holding a string prints as is
    (rich markup allowed); any other value goes through ``format``.
    """

    header: str
    format: Callable[[Any], str] = str
    justify: Literal["left", "right"] = "right"
    no_wrap: bool = False

    def cell(self, value: Any) -> str:
        """The text of one cell of this column."""
        if value is None:
            return "-"
        if isinstance(value, str):
            return value
        return self.format(value)


@dataclass(frozen=True)
class Table:
    """A titled table: columns, and rows of raw values (one per column)."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Note:
    """A line printed after or between tables (``markup`` lets rich read ``[green]``)."""

    text: str
    markup: bool = False


View = tuple[Table | Note, ...]


def to_plain(value: Any) -> Any:
    """JSON-ready data from a result: dataclasses by field, tuples as lists, mappings copied."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and f.metadata.get("omit_none"):
                continue
            out[f.metadata.get("key", f.name)] = to_plain(item)
        return out
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    return value


class BenchResult(abc.ABC):
    """What every benchmark result offers: its JSON report and its printed view."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON report, exactly as ``veil bench`` writes it."""
        plain = to_plain(self)
        assert isinstance(plain, dict)  # noqa: S101 - results are dataclasses
        return plain

    @abc.abstractmethod
    def view(self) -> View:
        """Tables and notes, in print order."""
