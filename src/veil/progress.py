"""Structured progress events for long work.

Library functions that take a while accept ``progress: ProgressCallback | None``
and call it with :class:`ProgressEvent` values; they never draw anything
themselves. The CLI turns the events into rich progress bars, a service into
log lines or server-sent events. A callback may raise ``KeyboardInterrupt`` (or
any exception) to stop the work: callers guarantee that nothing is half-written.

This module sits beside ``errors`` at the bottom of the dependency order so
that every package can report progress the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ProgressCallback", "ProgressEvent"]


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


ProgressCallback = Callable[[ProgressEvent], None]
