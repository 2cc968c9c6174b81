"""``veil datasets``: register data with its privacy schema, list and show it."""

from __future__ import annotations

import warnings
from typing import Annotated, Any

import typer
from rich.table import Table

from veil.cli._output import err, out, print_json, progress_bar
from veil.data import (
    Catalog,
    DatasetInfo,
    load_table,
    parse_bounds,
    parse_categories,
    suggest_bounds,
)
from veil.data._readers import FORMATS
from veil.errors import NotFoundError
from veil.workspace import Workspace

__all__ = ["app", "render_schema"]

app = typer.Typer(
    help="Register datasets with their privacy schema; list and show them.", no_args_is_help=True
)
_CATEGORIES_SHOWN = 3
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


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
        typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS)}; guessed if omitted."),
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
    as_json: JsonOption = False,
) -> None:
    """Validate a dataset against its declared privacy schema and register it.

    Every row is checked; nothing is written unless all checks pass.
    """
    parsed_bounds = parse_bounds(bounds or [])
    parsed_categories = parse_categories(categories or [])
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
            )
    finally:
        catalog.store.dispose()
    if as_json:
        print_json(info.to_dict())
        return
    out.print(
        f"Registered '{info.name}': {info.n_rows:,} rows, {len(info.schema.columns)} columns."
    )
    render_schema(info)


@app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """List registered datasets."""
    catalog = Catalog.open()
    try:
        infos = catalog.list()
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
    }


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
