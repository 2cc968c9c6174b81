"""``veil consent``: the purposes people consent to, and who consented to what.

Owners declare purposes, put a dataset under consent management, and record
or import consent; owners and auditors read it. From the moment a dataset is
enabled, every query, training run and release on it declares a purpose that
names a term (``--purpose "statistics: monthly report"``) and sees only the
rows of persons whose consent for that term holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from veil.cli._output import out, print_json

if TYPE_CHECKING:
    from veil.data import Consent

# veil.data (pandas, SQLAlchemy) is imported inside each command: `veil --help` stays fast.

__all__ = ["app"]

app = typer.Typer(
    help="Consent per person and purpose: the vocabulary, enabling a dataset, records, imports.",
    no_args_is_help=True,
)
purposes_app = typer.Typer(
    help="The consent vocabulary: list it, or add a term (owners).", invoke_without_command=True
)
app.add_typer(purposes_app, name="purposes")

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
DatasetArg = Annotated[str, typer.Argument(help="A registered dataset.")]


@contextmanager
def open_consent() -> Iterator[Consent]:
    """The workspace's consent records, acting as whoever runs ``veil``; closed after."""
    from veil.data import Catalog, Consent  # noqa: PLC0415

    catalog = Catalog.open()
    try:
        yield Consent(catalog)
    finally:
        catalog.store.dispose()


@purposes_app.callback()
def purposes(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The purposes a release may declare (each is a term, alone or followed by ': why')."""
    if ctx.invoked_subcommand is not None:
        return
    with open_consent() as consent:
        terms = consent.purposes()
    if as_json:
        print_json({"purposes": [p.to_dict() for p in terms]})
        return
    table = Table("purpose", "description", "declared by")
    for term in terms:
        table.add_row(Text(term.name), Text(term.description), Text(term.created_by))
    out.print(table)


@purposes_app.command("add")
def purposes_add(
    name: Annotated[str, typer.Argument(help="The term: lower-case letters, digits, '-'.")],
    description: Annotated[str, typer.Option("--description", help="What the data is used for.")],
    as_json: JsonOption = False,
) -> None:
    """Add a purpose to the vocabulary (owners; recorded on the trail)."""
    with open_consent() as consent:
        term = consent.add_purpose(name, description)
    if as_json:
        print_json({"purpose": term.to_dict()})
        return
    out.print(Text(f"Declared the purpose '{term.name}': {term.description}."))


@app.command()
def enable(
    dataset: DatasetArg,
    default: Annotated[
        str,
        typer.Option(
            "--default",
            help="For a person with no record: withdrawn (opt-in) or granted (opt-out).",
        ),
    ] = "withdrawn",
    as_json: JsonOption = False,
) -> None:
    """Put DATASET under consent management (owners; recorded)."""
    with open_consent() as consent:
        result = consent.enable(dataset, default)
    if as_json:
        print_json(result)
        return
    if not result["changed"]:
        out.print(Text(f"'{dataset}' is already under consent management (default {default})."))
        return
    rule = (
        "opt-in: no record means no" if default == "withdrawn" else "opt-out: no record means yes"
    )
    out.print(
        Text(
            f"'{dataset}' is under consent management ({rule}). Every release on it now "
            'declares a purpose: --purpose "statistics: why".'
        )
    )


@app.command("import")
def import_(
    dataset: DatasetArg,
    file: Annotated[
        Path,
        typer.Argument(help="CSV: person,purpose,status[,at][,source]; all lines or none."),
    ],
    source: Annotated[
        str | None,
        typer.Option("--source", help="Where the records come from (lines without a source)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Import consent records from a CSV file (owners; one bad line refuses the file)."""
    with open_consent() as consent:
        report = consent.import_csv(dataset, file, source=source)
    if as_json:
        print_json(report.to_dict())
        return
    out.print(
        Text(
            f"Imported {report.records:,} records for {report.persons:,} persons into "
            f"'{dataset}' (records {report.first_record}-{report.last_record})."
        )
    )
    _print_counts(report.counts, "records")


@app.command("set")
def set_(
    dataset: DatasetArg,
    person: Annotated[str, typer.Option("--person", help="The person's identifier.")],
    purpose: Annotated[str, typer.Option("--purpose", help="A term of the vocabulary.")],
    granted: Annotated[bool, typer.Option("--granted", help="The person consents.")] = False,
    withdrawn: Annotated[
        bool, typer.Option("--withdrawn", help="The person withdraws consent.")
    ] = False,
    source: Annotated[str, typer.Option("--source", help="Where this comes from.")] = "cli",
    at: Annotated[
        str | None,
        typer.Option("--at", help="When the person decided (ISO 8601; default now)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Record one person's consent for one purpose (owners; recorded)."""
    from veil.errors import InvalidInputError  # noqa: PLC0415

    if granted == withdrawn:
        raise InvalidInputError(
            "say which: granted or withdrawn",
            expected="exactly one of --granted, --withdrawn",
            got="both" if granted else "neither",
            fix=f"veil consent set {dataset} --person ID --purpose {purpose} --withdrawn",
        )
    status = "granted" if granted else "withdrawn"
    with open_consent() as consent:
        record = consent.record(dataset, person, purpose, status, at=at, source=source)
    if as_json:
        print_json({"dataset": dataset, "record": record, "purpose": purpose, "status": status})
        return
    out.print(Text(f"Recorded: {status} for '{purpose}' on '{dataset}' (record {record})."))


@app.command()
def show(
    dataset: DatasetArg,
    person: Annotated[
        str | None, typer.Option("--person", help="One person's state per purpose.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Consent on DATASET now: persons per purpose, or one person's state (owners, auditors)."""
    with open_consent() as consent:
        if person is not None:
            states = consent.state(dataset, person)
            _show_person(dataset, states, as_json=as_json)
            return
        summary = consent.summary(dataset)
    if as_json:
        print_json(summary)
        return
    if not summary["managed"]:
        out.print(Text(f"'{dataset}' is not under consent management (veil consent enable)."))
    else:
        out.print(Text(f"'{dataset}': default {summary['default']} for persons with no record."))
    _print_counts(summary["purposes"], "persons with a record")


def _show_person(dataset: str, states: dict[str, Any], *, as_json: bool) -> None:
    rows = {
        purpose: {
            "status": state.status,
            "at": None if state.at is None else state.at.isoformat(),
            "source": state.source,
        }
        for purpose, state in states.items()
    }
    if as_json:
        print_json({"dataset": dataset, "purposes": rows})
        return
    table = Table("purpose", "status", "since", "source")
    for purpose, row in rows.items():
        table.add_row(Text(purpose), row["status"], row["at"] or "-", Text(row["source"]))
    out.print(table)


def _print_counts(counts: dict[str, dict[str, int]], what: str) -> None:
    table = Table("purpose", f"granted ({what})", f"withdrawn ({what})")
    for purpose, per in counts.items():
        table.add_row(Text(purpose), f"{per.get('granted', 0):,}", f"{per.get('withdrawn', 0):,}")
    out.print(table)
