"""``veil init``: create the workspace and its database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from veil.cli._output import out, print_json
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.store import Store

__all__ = ["init"]


def init(
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Create a workspace in ./.veil (or VEIL_HOME) and bring its database up to date.

    Safe to run again: an existing workspace is kept and only migrated.
    """
    from veil.store import Store  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast

    home = Workspace.default_home()
    existed = (home / "config.toml").is_file()
    workspace = Workspace.create(home)
    store = Store.for_workspace(workspace, upgrade=True)
    try:
        result: dict[str, Any] = {
            "home": str(workspace.home),
            "created": not existed,
            "database": store.display_url,
            "backend": store.backend,
            "revision": store.current_revision(),
        }
        result |= _claim(workspace, store)
    finally:
        store.dispose()
    if as_json:
        print_json(result)
        return
    verb = "Created" if result["created"] else "Workspace already there:"
    out.print(f"{verb} {result['home']}")
    out.print(f"database  {result['database']} (schema revision {result['revision']})")
    held = ", ".join(
        r["role"] + ("" if r["scope"] == "*" else f" on '{r['scope']}'") for r in result["roles"]
    )
    if result["owner"] is not None:
        out.print(
            Text(f"owner     {result['owner']} (you; grant others roles with `veil access grant`)")
        )
    else:
        out.print(Text(f"you       {result['principal']} hold {held or 'no role'} here"))


def _claim(workspace: Workspace, store: Store) -> dict[str, Any]:
    """Claim an unowned workspace for the person running ``init``; who acts and holds what."""
    from veil.access import WORKSPACE, Access, Role  # noqa: PLC0415

    access = Access.open(workspace, store=store)
    held = sorted(access.policy().grants)  # the first person to act on an unowned one owns it
    principal = access.principal
    return {
        "principal": principal.name,
        "owner": principal.name if (Role.OWNER, WORKSPACE) in held else None,
        "roles": [{"role": str(r), "scope": s} for r, s in held],
    }
