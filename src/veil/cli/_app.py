"""The root of the ``veil`` command: global options and the error boundary.

Every :class:`~veil.errors.VeilError` becomes a one-paragraph message on
stderr and the error's stable exit code; with ``--json`` the same error is also
written to stdout as ``{"error": {...}}``. Anything else is a bug: exit code 1,
a short note, and the traceback only with ``--debug``.
"""

from __future__ import annotations

import functools
import sys
import traceback
from typing import Annotated

import click
import typer
import typer.main

from veil import __version__
from veil.cli import (
    access,
    anonymize,
    audit,
    bench,
    budget,
    consent,
    datasets,
    db,
    demo,
    erase,
    federate,
    he,
    init,
    keys,
    models,
    mpc,
    query,
    redact,
    retention,
    serve,
    synth,
    trail,
    train,
    unlearn,
    vault,
)
from veil.cli._output import err, print_error
from veil.errors import VeilError

__all__ = ["EXIT_BUG", "EXIT_INTERRUPTED", "EXIT_USAGE", "app", "main"]

EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="veil",
    help="Veil: machine learning on sensitive data, with every release accounted for.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"veil {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Veil: machine learning on sensitive data, with every release accounted for."""
    del version
    _state["debug"] = debug


app.command("init")(init.init)
app.add_typer(db.app, name="db")
app.add_typer(datasets.app, name="datasets")
app.add_typer(budget.app, name="budget")
app.command("query")(query.query)
app.command("train")(train.train)
app.add_typer(models.app, name="models")
app.command("audit")(audit.audit)
app.command("scan")(anonymize.scan)
app.command("anonymize")(anonymize.anonymize)
app.command("redact")(redact.redact)
app.add_typer(federate.app, name="federate")
app.add_typer(he.app, name="he")
app.add_typer(bench.app, name="bench")
app.command("demo")(demo.demo)
app.add_typer(vault.app, name="vault")
app.add_typer(mpc.app, name="mpc")
app.add_typer(trail.app, name="trail")
app.add_typer(access.app, name="access")
app.add_typer(keys.app, name="keys")
app.add_typer(consent.app, name="consent")
app.command("erase")(erase.erase)
app.add_typer(retention.app, name="retention")
app.command("unlearn")(unlearn.unlearn)
app.command("synth")(synth.synth)
app.command("serve")(serve.serve)


@functools.cache
def _command() -> click.Command:
    """The click command Typer builds from ``app``: built once a process, not once a call.

    ``app(...)`` rebuilds the whole command tree (every group, command and
    option) on every call, about 0.1 s; a process that runs the CLI many times
    (the test suite, an embedding program) pays it once.
    """
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the ``veil`` entry point)."""
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in args
    as_json = "--json" in args
    try:
        result = _command().main(args=args, prog_name="veil", standalone_mode=False)
    except VeilError as error:
        if _state["debug"]:
            traceback.print_exc()
        print_error(error, as_json=as_json)
        return error.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        err.print("interrupted: nothing was changed.", style="yellow")
        return EXIT_INTERRUPTED
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as usage:  # malformed command line
        usage.show()
        return usage.exit_code
    except Exception as bug:  # noqa: BLE001 - the last boundary before the user's terminal
        if _state["debug"]:
            traceback.print_exc()
        else:
            err.print(
                f"unexpected error ({type(bug).__name__}: {bug}). This is a bug in Veil: rerun "
                "with `veil --debug ...` to see the traceback, and please report it.",
                style="bold red",
                markup=False,
            )
        return EXIT_BUG
    code = result if isinstance(result, int) else 0
    if code == EXIT_INTERRUPTED:  # Typer turns Ctrl-C inside a command into exit code 130
        err.print("interrupted: nothing was changed.", style="yellow")
    return code
