"""Structured progress events for long work.

Library functions that take a while accept ``progress: ProgressCallback | None``
and call it with :class:`ProgressEvent` values; they never draw anything
themselves. The CLI turns the events into rich progress bars, a service into
log lines or server-sent events. A callback may raise ``KeyboardInterrupt`` (or
any exception) to stop the work: callers guarantee that nothing is half-written.

A library function reports a step with :func:`emit` (which does nothing when
no callback was given). A child process whose parent shows the progress writes
each event as one JSON line (:func:`json_line_reporter`); the parent reads it
back with :func:`ProgressEvent.from_dict` and passes it to its own callback.

This module sits beside ``errors`` at the bottom of the dependency order so
that every package can report progress the same way.

>>> seen = []
>>> emit(seen.append, "validate adult.data", 10, 40, unit="rows")
>>> seen[0].to_dict()
{'task': 'validate adult.data', 'completed': 10, 'total': 40, 'unit': 'rows', 'detail': ''}
>>> emit(None, "nobody listens", 1)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ProgressCallback", "ProgressEvent", "emit", "json_line_reporter"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long task.

    Attributes:
        task: A short label, for example ``"validate adult.data"``.
        completed: Units done so far.
        total: Units in all, or ``None`` when unknown.
        unit: What is counted (``"bytes"``, ``"rows"``, ``"epochs"``...).
        detail: A short live status (``"loss 0.31  acc 91.2%  eps 1.40"``).
    """

    task: str
    completed: float
    total: float | None = None
    unit: str = "items"
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready mapping (what :func:`json_line_reporter` writes)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProgressEvent:
        """An event from :meth:`to_dict`'s mapping (``unit`` and ``detail`` may be absent)."""
        return cls(
            task=str(data["task"]),
            completed=data["completed"],
            total=data.get("total"),
            unit=str(data.get("unit", "items")),
            detail=str(data.get("detail", "")),
        )


ProgressCallback = Callable[[ProgressEvent], None]


def emit(
    progress: ProgressCallback | None,
    task: str,
    completed: float,
    total: float | None = None,
    *,
    unit: str = "items",
    detail: str = "",
) -> None:
    """Report one step to ``progress``, or do nothing when there is no callback."""
    if progress is not None:
        progress(ProgressEvent(task, completed, total, unit, detail))


def json_line_reporter(write: Callable[[str], object], *, prefix: str = "") -> ProgressCallback:
    """A callback writing each event as one line: ``prefix`` + ``{"progress": {...}}``.

    For a child process whose parent reads its standard output: ``write`` is,
    for example, a function that writes to ``sys.stdout`` and flushes it.
    """

    def report(event: ProgressEvent) -> None:
        write(prefix + json.dumps({"progress": event.to_dict()}) + "\n")

    return report
