"""``veil datasets``: register data with its privacy schema; list, show, update and remove it.

It runs to about 520 lines because seven commands declare their options here (each option's
help text is user documentation); the work itself is in :mod:`veil.data`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from veil._io import write_text_atomic
from veil.cli._dataset_versions import versions
from veil.cli._output import err, out, print_json, progress_bar
from veil.errors import NotFoundError
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.data import DatasetInfo

# veil.data (pandas, SQLAlchemy, Alembic) loads inside the commands: `veil --help` stays fast.
# The formats of veil.data.readers.FORMATS, as text (a test keeps the two equal).
FORMATS_HELP = "csv, parquet, adult, mnist, sklearn"

__all__ = ["app", "render_schema"]

app = typer.Typer(
    help="Register datasets with their privacy schema; list, show, update and remove them.",
    no_args_is_help=True,
)
_CATEGORIES_SHOWN = 3
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


CategoriesFromOption = Annotated[
    str | None,
    typer.Option(
        "--categories-from",
        help="A YAML or JSON codebook: column -> list of categories (exact strings; "
        "`veil datasets suggest-categories` drafts one).",
    ),
]


def _categories(items: list[str] | None, codebook: str | None) -> dict[str, tuple[str, ...]]:
    """The codebook's categories, then --categories (which win, column by column)."""
    from veil.data import parse_categories, read_codebook  # noqa: PLC0415 - loads pandas

    merged = read_codebook(codebook) if codebook else {}
    return merged | parse_categories(items or [])


@app.command()
def add(
    path: Annotated[
        str,
        typer.Argument(
            help="File, MNIST folder, or sklearn:NAME (breast_cancer, diabetes, digits, iris, wine)."
        ),
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Name to register the dataset under.")],
    format: Annotated[  # noqa: A002 - the user-facing word
        str | None,
        typer.Option("--format", "-f", help=f"One of {FORMATS_HELP}; guessed if omitted."),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option("--id", help="Column identifying a person. Omit when one row is one person."),
    ] = None,
    qi: Annotated[
        list[str] | None, typer.Option("--qi", help="Quasi-identifier columns, comma-separated.")
    ] = None,
    sensitive: Annotated[
        list[str] | None, typer.Option("--sensitive", help="Sensitive columns, comma-separated.")
    ] = None,
    bounds: Annotated[
        list[str] | None,
        typer.Option("--bounds", help="Declared bounds col=lo:hi (repeat, or comma-separate)."),
    ] = None,
    categories: Annotated[
        list[str] | None,
        typer.Option("--categories", help="Declared categories col=a|b|c (repeatable)."),
    ] = None,
    categories_from: CategoriesFromOption = None,
    max_groups: Annotated[
        int,
        typer.Option("--max-groups", help="Most groups one person's rows fall into (needs --id)."),
    ] = 1,
    max_rows: Annotated[
        int, typer.Option("--max-rows", help="Most rows of one person per group (needs --id).")
    ] = 1,
    delimiter: Annotated[
        str | None, typer.Option("--delimiter", help="CSV delimiter; '\\t' for tab.")
    ] = None,
    encoding: Annotated[
        str, typer.Option("--encoding", help="Text encoding of the file.")
    ] = "utf-8",
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="MNIST: train (default) or test; sklearn:NAME: all (default), train or test "
            "(a fixed 2/3 : 1/3 partition).",
        ),
    ] = None,
    managed: Annotated[
        bool,
        typer.Option(
            "--managed",
            help="Keep an encrypted, versioned copy in the workspace (needs VEIL_VAULT_KEY or "
            "VEIL_VAULT_PASSPHRASE), so that erasure and retention can apply. Tables only.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Validate a dataset against its declared privacy schema and register it.

    Every row is checked; nothing is written unless all checks pass. With
    --managed the table is sealed into the workspace as version 1; the file
    you registered is left as it is.
    """
    from veil.data import Catalog, parse_bounds  # noqa: PLC0415 - loads pandas and SQLAlchemy

    parsed_bounds = parse_bounds(bounds or [])
    parsed_categories = _categories(categories, categories_from)
    catalog = Catalog.open()
    try:
        with progress_bar() as progress:
            info = catalog.add(
                path,
                name=name,
                format=format,
                privacy_unit=id_column,
                quasi_identifiers=_split(qi),
                sensitive=_split(sensitive),
                bounds=parsed_bounds,
                categories=parsed_categories,
                max_groups=max_groups,
                max_rows=max_rows,
                delimiter="\t" if delimiter in ("\\t", "tab") else delimiter,
                encoding=encoding,
                split=split,
                progress=progress,
                managed=managed,
            )
    finally:
        catalog.store.dispose()
    if as_json:
        print_json(info.to_dict())
        return
    out.print(
        f"Registered '{info.name}': {info.n_rows:,} rows, {len(info.schema.columns)} columns."
    )
    rejoined = info.report.get("rejoined")
    if rejoined:
        out.print(
            f"[yellow]The same data was registered as '{rejoined['name']}' and removed; it rejoins "
            f"that history:[/yellow] its budget and {rejoined['releases']} release(s) still count "
            f"(see `veil budget show {info.name}`)."
        )
    render_schema(info)


@app.command()
def update(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    id_column: Annotated[
        str | None,
        typer.Option("--id", help="Column identifying a person ('' : one row is one person)."),
    ] = None,
    qi: Annotated[
        list[str] | None,
        typer.Option("--qi", help="Quasi-identifier columns, comma-separated (replaces them)."),
    ] = None,
    sensitive: Annotated[
        list[str] | None,
        typer.Option("--sensitive", help="Sensitive columns, comma-separated (replaces them)."),
    ] = None,
    bounds: Annotated[
        list[str] | None,
        typer.Option("--bounds", help="Bounds col=lo:hi to declare or change (others kept)."),
    ] = None,
    categories: Annotated[
        list[str] | None,
        typer.Option("--categories", help="Categories col=a|b|c to declare or change."),
    ] = None,
    categories_from: CategoriesFromOption = None,
    max_groups: Annotated[
        int | None, typer.Option("--max-groups", help="Most groups one person's rows fall into.")
    ] = None,
    max_rows: Annotated[
        int | None, typer.Option("--max-rows", help="Most rows of one person per group.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-declare a dataset's bounds, categories and roles; every row is checked again.

    What is not named is kept. The data must be the registered file, unchanged;
    the dataset keeps its name, budget and releases, and the change is recorded.
    """
    from veil.data import Catalog, parse_bounds  # noqa: PLC0415 - loads pandas and SQLAlchemy

    parsed_bounds = parse_bounds(bounds or [])
    parsed_categories = _categories(categories, categories_from)
    catalog = Catalog.open()
    try:
        with progress_bar() as progress:
            info = catalog.update(
                name,
                privacy_unit=id_column,
                quasi_identifiers=None if qi is None else _split(qi),
                sensitive=None if sensitive is None else _split(sensitive),
                bounds=parsed_bounds,
                categories=parsed_categories,
                max_groups=max_groups,
                max_rows=max_rows,
                progress=progress,
            )
    finally:
        catalog.store.dispose()
    if as_json:
        print_json(info.to_dict())
        return
    out.print(f"Updated '{info.name}': every one of its {info.n_rows:,} rows checked again.")
    render_schema(info)


@app.command()
def remove(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    as_json: JsonOption = False,
) -> None:
    """Remove a registration (never the file). With a budget or releases, it is archived.

    An archived dataset keeps its ledger: registering the same data again, under
    any name, brings its budget and releases back.
    """
    from veil.data import Catalog  # noqa: PLC0415 - loads pandas and SQLAlchemy

    catalog = Catalog.open()
    try:
        result = catalog.remove(name)
    finally:
        catalog.store.dispose()
    if as_json:
        print_json(result)
        return
    if "destroyed_versions" in result:
        out.print(
            f"Destroyed the sealed version(s) {result['destroyed_versions']} of '{name}': their "
            "data keys are gone, so no copy of them opens again."
        )
    if not result["archived"]:
        out.print(f"Removed '{name}' (it had no budget and no release). The file is untouched.")
        return
    out.print(
        f"Removed '{name}': archived as '{result['archived_as']}' with its ledger "
        f"({result['releases']} release(s)). Registering the same data again rejoins that "
        "history; its budget is never reset. The file is untouched."
    )


@app.command("list")
def list_(
    archived: Annotated[
        bool,
        typer.Option("--archived", help="The removed datasets kept for their ledger instead."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List registered datasets."""
    from veil.data import Catalog  # noqa: PLC0415 - loads pandas and SQLAlchemy

    catalog = Catalog.open()
    try:
        infos = catalog.list(archived=archived)
    finally:
        catalog.store.dispose()
    if as_json:
        print_json([_summary(i) for i in infos])
        return
    if not infos:
        out.print("No datasets yet: register one with `veil datasets add PATH --name NAME`.")
        return
    table = Table(
        "name",
        "format",
        "rows",
        "columns",
        "privacy unit",
        "quasi-identifiers",
        "sensitive",
        "registered",
    )
    for info in infos:
        s = _summary(info)
        table.add_row(
            s["name"],
            s["format"],
            f"{s['n_rows']:,}",
            str(s["n_columns"]),
            s["privacy_unit"] or "one row = one person",
            ", ".join(s["quasi_identifiers"]) or "-",
            ", ".join(s["sensitive"]) or "-",
            s["created_at"][:19],
        )
    out.print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    as_json: JsonOption = False,
) -> None:
    """Show a dataset's privacy schema and registration report."""
    from veil.data import Catalog  # noqa: PLC0415 - loads pandas and SQLAlchemy

    catalog = Catalog.open()
    try:
        info = catalog.get(name)
    finally:
        catalog.store.dispose()
    if as_json:
        print_json(info.to_dict())
        return
    render_schema(info)


@app.command("suggest-bounds")
def suggest_bounds_(
    path: Annotated[str, typer.Argument(help="File or sklearn:NAME to read.")],
    format: Annotated[  # noqa: A002 - the user-facing word
        str | None, typer.Option("--format", "-f", help="Format; guessed if omitted.")
    ] = None,
    columns: Annotated[
        list[str] | None, typer.Option("--columns", help="Columns, comma-separated.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print min:max of numeric columns read FROM THE DATA (this leaks; see the warning).

    For exploration only. Bounds read from the data reveal the most extreme
    records; declare bounds from domain knowledge for any private release.
    """
    from veil.data import load_table, suggest_bounds  # noqa: PLC0415 - loads pandas and SQLAlchemy

    try:
        limit = Workspace.locate().settings.max_load_bytes
    except NotFoundError:  # no workspace needed to read a file: use the default limit
        limit = None
    frame = load_table(path, format, max_load_bytes=limit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        suggested = suggest_bounds(frame, _split(columns) or None)
    for warning in caught:
        err.print(
            f"PRIVACY LEAK WARNING: {warning.message}", style="bold red on default", markup=False
        )
    flag = ",".join(f"{c}={lo:g}:{hi:g}" for c, (lo, hi) in suggested.items())
    if as_json:
        print_json(
            {"bounds": {c: list(b) for c, b in suggested.items()}, "leaks": True, "flag": flag}
        )
        return
    table = Table(
        "column", "lower (data min)", "upper (data max)", title="Bounds read from the data"
    )
    for column, (lo, hi) in suggested.items():
        table.add_row(column, f"{lo:g}", f"{hi:g}")
    out.print(table)
    out.print(f"--bounds {flag}", markup=False)


@app.command("suggest-categories")
def suggest_categories_(
    path: Annotated[str, typer.Argument(help="File or sklearn:NAME to read.")],
    format: Annotated[  # noqa: A002 - the user-facing word
        str | None, typer.Option("--format", "-f", help="Format; guessed if omitted.")
    ] = None,
    columns: Annotated[
        list[str] | None, typer.Option("--columns", help="Columns, comma-separated.")
    ] = None,
    max_categories: Annotated[
        int, typer.Option("--max-categories", help="Leave out columns with more values.")
    ] = 50,
    delimiter: Annotated[
        str | None, typer.Option("--delimiter", help="CSV delimiter; '\\t' for tab.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Write the codebook (YAML) here for --categories-from."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Draft a codebook of categories read FROM THE DATA (this leaks; see the warning).

    For exploration only: a rare category names the few people who have it.
    Check the draft against the data's published codebook before registering.
    """
    import yaml  # noqa: PLC0415 - only this command writes YAML

    from veil.data import load_table, suggest_categories  # noqa: PLC0415 - loads pandas

    try:
        limit = Workspace.locate().settings.max_load_bytes
    except NotFoundError:  # no workspace needed to read a file: use the default limit
        limit = None
    options = (
        {}
        if delimiter is None
        else {"delimiter": "\t" if delimiter in ("\\t", "tab") else delimiter}
    )
    frame = load_table(path, format, max_load_bytes=limit, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        codebook, left_out = suggest_categories(
            frame, _split(columns) or None, max_categories=max_categories
        )
    for warning in caught:
        err.print(
            f"PRIVACY LEAK WARNING: {warning.message}", style="bold red on default", markup=False
        )
    text = yaml.safe_dump(
        {c: list(v) for c, v in codebook.items()}, allow_unicode=True, sort_keys=False
    )
    if output is not None:
        _write_codebook(output, text)
    if as_json:
        print_json(
            {
                "categories": {c: list(v) for c, v in codebook.items()},
                "left_out": left_out,
                "leaks": True,
                "output": None if output is None else str(output),
            }
        )
        return
    table = Table("column", "categories", title="Categories read from the data")
    for column, values in codebook.items():
        shown = (
            " | ".join(values) if len(values) <= _CATEGORIES_SHOWN else f"{len(values)} categories"
        )
        table.add_row(column, shown)
    for column, why in left_out.items():
        table.add_row(column, f"[dim]left out: {why}[/dim]")
    out.print(table)
    if output is not None:
        out.print(f"Codebook written to {output}: `--categories-from {output}`.", markup=False)
    else:
        out.print(text, markup=False, highlight=False)


def _write_codebook(path: Path, text: str) -> None:
    path = path.expanduser()
    if not path.parent.is_dir():
        raise NotFoundError(
            "the output folder does not exist",
            expected="an existing folder",
            got=str(path.parent),
            fix="create it first, or write the codebook elsewhere",
        )
    write_text_atomic(path, text, make_parents=False)


def _summary(info: DatasetInfo) -> dict[str, Any]:
    schema = info.schema
    return {
        "name": info.name,
        "format": info.format,
        "n_rows": info.n_rows,
        "n_columns": len(schema.columns),
        "privacy_unit": schema.privacy_unit,
        "quasi_identifiers": list(schema.quasi_identifiers),
        "sensitive": list(schema.sensitive),
        "created_at": info.created_at.isoformat(),
        "managed": info.managed,
        "version": info.version,
    } | ({"archived": info.archived} if info.archived is not None else {})


def _role(info: DatasetInfo, column: str) -> str:
    schema = info.schema
    if column == schema.privacy_unit:
        return "privacy unit"
    if column in schema.quasi_identifiers:
        return "quasi-identifier"
    if column in schema.sensitive:
        return "sensitive"
    return ""


def render_schema(info: DatasetInfo) -> None:
    """Print a dataset's schema as tables (shared with ``veil demo``)."""
    schema = info.schema
    unit = schema.privacy_unit or "one row = one person"
    out.print(f"[bold]{info.name}[/bold]  {info.format}  {info.source}")
    if info.managed:
        held = f"version {info.version}" if info.version is not None else "no data left"
        out.print(
            f"managed: sealed in the workspace, {held} (`veil datasets versions {info.name}`)"
        )
    out.print(
        f"{info.n_rows:,} rows · privacy unit: {unit} · {info.report.get('privacy_units', '?'):,} people"
        f" · sha256 {info.content_sha256[:16]}…"
    )
    if schema.privacy_unit is not None:
        out.print(
            f"contribution bounds: at most {schema.max_groups} group(s) per person, "
            f"{schema.max_rows} row(s) per group"
        )
    table = Table("column", "kind", "role", "declared", "missing", "outside bounds")
    for spec in schema.columns:
        stats = info.report.get("columns", {}).get(spec.name, {})
        if spec.bounds is not None:
            declared = f"{spec.bounds[0]:g} .. {spec.bounds[1]:g}"
        elif spec.categories is not None:
            cats = spec.categories
            declared = (
                " | ".join(cats) if len(cats) <= _CATEGORIES_SHOWN else f"{len(cats)} categories"
            )
        else:
            declared = "[yellow]none[/yellow]" if spec.kind in ("numeric", "categorical") else ""
        if spec.declared_by:
            declared += f" ({spec.declared_by})"
        outside = stats.get("below_lower", 0) + stats.get("above_upper", 0) if spec.bounds else None
        table.add_row(
            spec.name,
            spec.kind + (f" {tuple(spec.shape)}" if spec.shape else ""),
            _role(info, spec.name),
            declared,
            str(stats.get("missing", "")),
            "" if outside is None else str(outside),
        )
    out.print(table)
    if info.report.get("unbounded_numeric"):
        out.print(
            "[yellow]No declared bounds:[/yellow] "
            + ", ".join(info.report["unbounded_numeric"])
            + ". DP queries need bounds on the numeric columns they use (--bounds col=lo:hi)."
        )


app.command("versions")(versions)
