"""``veil bench``: benchmarks that write JSON and a readable table."""

from __future__ import annotations

import typer

__all__ = ["app"]

app = typer.Typer(help="Benchmarks: JSON plus a readable table.", no_args_is_help=True)
