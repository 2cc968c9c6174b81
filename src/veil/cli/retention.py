"""``veil retention``: how long a managed dataset's rows are kept, and the run that enforces it.

``set`` and ``run`` need ``dataset.erase`` (owners); ``show`` lists the
policies you may read (``consent.read``: owners and auditors). ``run`` is made for cron: it applies only
what is due (a second run writes nothing), two runs at once never both write a
version of the same dataset, and ``--dry-run`` reports without writing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from veil.cli._acting import failure_recorded
from veil.cli._output import out, print_json, progress_bar
from veil.errors import InvalidInputError, PermissionDeniedError
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.data import Catalog
    from veil.governance import RetentionReport

__all__ = ["app", "parse_age", "render_retention"]

app = typer.Typer(
    help="Retention policies of managed datasets, and the run that applies them.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
_AGE = re.compile(r"(\d+)\s*(d|days?|w|weeks?|y|years?)?", re.IGNORECASE)
_UNIT_DAYS = {"d": 1, "w": 7, "y": 365}


def parse_age(text: str) -> int:
    """``"365d"`` -> 365, ``"26w"`` -> 182, ``"2y"`` -> 730 (a year is 365 days), ``"90"`` -> 90."""
    match = _AGE.fullmatch(text.strip())
    if match is None or int(match.group(1)) < 1:
        raise InvalidInputError(
            "the maximum age is not a number of days",
            expected="a whole number of days, weeks or years: 365d, 26w, 2y (a year is 365 days)",
            got=repr(text),
            fix="for example --older-than 365d",
        )
    unit = (match.group(2) or "d")[0].lower()
    return int(match.group(1)) * _UNIT_DAYS[unit]


@contextmanager
def _catalog() -> Iterator[Catalog]:
    from veil.access import Access  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast
    from veil.data import Catalog  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415

    workspace = Workspace.locate()
    store = Store.for_workspace(workspace)
    try:
        access = Access.open(workspace, store=store)
        yield Catalog(store, workspace.settings, access=access)
    finally:
        store.dispose()


@contextmanager
def _failure_recorded(
    catalog: Catalog,
    action: str,
    *,
    dataset: str | None = None,
    details: dict[str, Any] | None = None,
) -> Iterator[None]:
    """Record a failure on the trail; a refusal is recorded (as refused) by the check itself."""
    try:
        yield
    except PermissionDeniedError:
        raise
    except BaseException:
        with failure_recorded(catalog.access, action, dataset=dataset, details=details):
            raise


@app.command("set")
def set_(
    dataset: Annotated[str, typer.Argument(help="A managed dataset.")],
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Remove rows older than this (365d, 26w, 2y)."),
    ] = None,
    date_column: Annotated[
        str | None, typer.Option("--date-column", help="The column that dates each row.")
    ] = None,
    expire_on: Annotated[
        str | None,
        typer.Option("--expire-on", help="Destroy every version once this date has passed."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Set DATASET's policy: --older-than AGE --date-column COL, or --expire-on DATE."""
    from veil.governance import set_policy  # noqa: PLC0415

    days = None if older_than is None else parse_age(older_than)
    with _catalog() as catalog, _failure_recorded(catalog, "retention.set", dataset=dataset):
        policy = set_policy(
            catalog, dataset, older_than_days=days, date_column=date_column, expire_on=expire_on
        )
    if as_json:
        print_json(policy.to_dict())
        return
    out.print(f"retention of '{dataset}': {policy.describe()}. Apply it with `veil retention run`.")


@app.command("show")
def show(as_json: JsonOption = False) -> None:
    """The retention policies you may read (owners and auditors)."""
    from veil.governance import policies  # noqa: PLC0415

    with _catalog() as catalog:
        found = policies(catalog)
    if as_json:
        print_json([p.to_dict() for p in found])
        return
    if not found:
        out.print("no retention policy is set (see `veil retention set`).")
        return
    table = Table("dataset", "policy", "set by", "last applied")
    for p in found:
        last = "-" if p.last_run_at is None else f"{p.last_run_at:%Y-%m-%d %H:%M} UTC"
        table.add_row(p.dataset, p.describe(), p.created_by, last)
    out.print(table)


def render_retention(report: RetentionReport) -> None:
    """Print a retention run for people."""
    head = "dry run: nothing was written" if report.dry_run else "retention run"
    out.print(f"{head} at {report.at:%Y-%m-%d %H:%M} UTC")
    if not report.actions:
        out.print("no retention policy is set (see `veil retention set`).")
        return
    table = Table("dataset", "policy", "due", "rows removed", "versions", "note")
    for a in report.actions:
        if a.to_version is not None:
            versions = f"{a.from_version} -> {a.to_version}"
        elif a.destroyed_versions:
            versions = "destroyed " + ", ".join(map(str, a.destroyed_versions))
        else:
            versions = "-" if a.from_version is None else str(a.from_version)
        table.add_row(
            a.dataset, a.kind, "yes" if a.due else "no", f"{a.rows_removed:,}", versions, a.note
        )
    out.print(table)
    if report.changed:
        out.print(f"note: {report.budget_note}.")


@app.command("run")
def run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what is due; write nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Apply every due policy (safe to run from cron: nothing due, nothing written)."""
    from veil.governance import run_retention  # noqa: PLC0415

    with (
        _catalog() as catalog,
        _failure_recorded(catalog, "retention.run", details={"dry_run": dry_run}),
        progress_bar() as progress,
    ):
        report = run_retention(catalog, dry_run=dry_run, progress=progress)
    if as_json:
        print_json(report.to_dict())
        return
    render_retention(report)
