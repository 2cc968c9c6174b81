"""How the CLI speaks: JSON for machines on stdout, tables for people, messages on stderr."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from veil import _io
from veil.errors import VeilError
from veil.progress import ProgressCallback, ProgressEvent

__all__ = ["err", "out", "print_error", "print_json", "progress_bar", "write_json_atomic"]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def print_json(payload: Any) -> None:
    """Write ``payload`` as indented JSON on stdout (no markup, no wrapping).

    Infinities are written ``"inf"`` and values JSON lacks (paths, dates) as
    strings: :func:`veil._io.dumps`, like every JSON file Veil writes.
    """
    sys.stdout.write(_io.dumps(payload, indent=2) + "\n")
    sys.stdout.flush()


def print_error(error: VeilError, *, as_json: bool) -> None:
    """Print an error as one paragraph on stderr (and as JSON on stdout with ``--json``)."""
    if as_json:
        print_json({"error": error.to_dict()})
    paragraph = textwrap.fill(f"error [{error.code}]: {error}", width=max(err.width, 60))
    err.print(paragraph, style="bold red", markup=False, highlight=False, soft_wrap=True)


@contextmanager
def progress_bar() -> Iterator[ProgressCallback]:
    """A rich progress display on stderr, fed by library :class:`ProgressEvent` values."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        tasks: dict[str, TaskID] = {}

        def update(event: ProgressEvent) -> None:
            if event.task not in tasks:
                tasks[event.task] = progress.add_task(
                    event.task, total=event.total, unit=event.unit, detail=event.detail
                )
            progress.update(
                tasks[event.task],
                completed=event.completed,
                total=event.total,
                detail=event.detail,
            )

        yield update


def write_json_atomic(path: Path, payload: Any, *, owner_only: bool = True) -> None:
    """Write ``payload`` as JSON atomically: a complete file or none at all.

    The file is readable by its owner only unless ``owner_only=False`` (then 0644).
    """
    _io.write_json_atomic(path, payload, mode=0o600 if owner_only else 0o644)
