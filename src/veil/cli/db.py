"""``veil db``: the workspace database's schema version (and, after an upgrade, its owner)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

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


def _ownership(workspace: Workspace, store: Store) -> dict[str, Any]:
    """Who acts, what they hold, and who owns the workspace (claimed now if nobody did).

    A workspace upgraded from before roles existed has no owner: the first
    person to act on it claims it (recorded on the trail as ``access.claim``),
    so the person upgrading becomes its owner. The owners are listed to
    whoever may read the grants (``access.read``).
    """
    from veil.access import WORKSPACE, Access, Permission, Role  # noqa: PLC0415

    access = Access.open(workspace, store=store)
    held = sorted(access.policy().grants)
    owners = None
    if access.allows(Permission.ACCESS_READ):
        owners = sorted(
            g.principal for g in access.grants() if g.role is Role.OWNER and g.scope == WORKSPACE
        )
    return {
        "principal": access.principal.name,
        "roles": [{"role": str(r), "scope": s} for r, s in held],
        "owners": owners,
    }


@app.command()
def upgrade(as_json: JsonOption = False) -> None:
    """Migrate the database to the schema revision this Veil needs, and say who owns it.

    An unowned workspace (upgraded from before roles) is claimed by the person upgrading.
    """
    from veil.store import Store  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast

    workspace = Workspace.locate()
    store = Store.open(workspace.settings.database_url, check=False)
    try:
        before = store.current_revision()
        store.upgrade()
        ownership = _ownership(workspace, store)
        result = _status(store) | {"previous_revision": before} | ownership
    finally:
        store.dispose()
    if as_json:
        print_json(result)
        return
    out.print(f"schema revision {before} -> {result['revision']}")
    held = ", ".join(
        r["role"] + ("" if r["scope"] == "*" else f" on '{r['scope']}'") for r in ownership["roles"]
    )
    if ownership["owners"] is not None:
        out.print(Text(f"owners    {', '.join(ownership['owners'])}"))
    out.print(Text(f"you       {ownership['principal']} hold {held or 'no role'} here"))
