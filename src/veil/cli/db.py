"""``veil db``: the workspace database's schema version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from veil.cli._output import out, print_json
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.store import Store

__all__ = ["app"]

app = typer.Typer(help="Inspect and migrate the workspace database.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _status(store: Store) -> dict[str, object]:
    from veil.store import head_revision  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast

    current = store.current_revision()
    return {
        "database": store.display_url,
        "backend": store.backend,
        "revision": current,
        "head": head_revision(),
        "up_to_date": current == head_revision(),
    }


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Show the database, its schema revision and the one this Veil needs."""
    from veil.store import Store  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast

    workspace = Workspace.locate()
    store = Store.open(workspace.settings.database_url, check=False)
    try:
        result = _status(store)
    finally:
        store.dispose()
    if as_json:
        print_json(result)
        return
    out.print(f"database  {result['database']}")
    out.print(f"revision  {result['revision']} (this Veil needs {result['head']})")
    if not result["up_to_date"]:
        out.print("run `veil db upgrade` after backing up the database", style="yellow")


@app.command()
def upgrade(as_json: JsonOption = False) -> None:
    """Migrate the database to the schema revision this Veil needs."""
    from veil.store import Store  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast

    workspace = Workspace.locate()
    store = Store.open(workspace.settings.database_url, check=False)
    try:
        before = store.current_revision()
        store.upgrade()
        result = _status(store) | {"previous_revision": before}
    finally:
        store.dispose()
    if as_json:
        print_json(result)
        return
    out.print(f"schema revision {before} -> {result['revision']}")
