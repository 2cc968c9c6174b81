"""The `veil` command run in the test's own process: `main`, its output captured.

The function behind the `veil` executable (`veil.cli._app.main`: the same parsing, exit
code and printing) run here rather than as a process, so that the libraries a command
needs load once per worker rather than once per command. The executable itself is run
by the tests that check it (for example tests/cli/test_startup.py and tests/test_docs.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["environment", "run_cli"]


def _put(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for ``None``, remove) these variables for the block; restore them after."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        _put(values)
        yield
    finally:
        _put(saved)


def run_cli(
    *args: str, cwd: Path | None = None, env: Mapping[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """``veil ARGS`` in this process, in ``cwd`` and with ``env`` for its duration.

    Returns what a ``subprocess.run(..., capture_output=True, text=True)`` of the
    executable would: the exit code, standard output and standard error.
    """
    from veil.cli._app import main

    out, err = io.StringIO(), io.StringIO()
    here = Path.cwd()
    with environment(env or {}):
        if cwd is not None:
            os.chdir(cwd)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(args))
        finally:
            os.chdir(here)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
