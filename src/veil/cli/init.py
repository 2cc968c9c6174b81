"""``veil init``: create the workspace and its database."""

from __future__ import annotations

from typing import Annotated

import typer

from veil.cli._output import out, print_json
from veil.workspace import Workspace

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
        result = {
            "home": str(workspace.home),
            "created": not existed,
            "database": store.display_url,
            "backend": store.backend,
            "revision": store.current_revision(),
        }
    finally:
        store.dispose()
    if as_json:
        print_json(result)
        return
    verb = "Created" if result["created"] else "Workspace already there:"
    out.print(f"{verb} {result['home']}")
    out.print(f"database  {result['database']} (schema revision {result['revision']})")
