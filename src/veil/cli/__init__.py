"""The ``veil`` command line: one module per command group, each thin over the library."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Console-script entry point."""
    from veil.cli._app import main as run  # noqa: PLC0415 - keeps `import veil.cli` light

    sys.exit(run())
