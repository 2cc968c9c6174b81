"""``veil keys``: service keys. Create (the token is shown once), revoke, list (never secrets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from veil.cli._output import out, print_json
from veil.cli._when import parse_duration
from veil.cli.access import open_access

if TYPE_CHECKING:
    from veil.access import ServiceKeyInfo

# veil.access (SQLAlchemy, cryptography) is imported inside each command: `veil --help` stays fast.

__all__ = ["ONCE", "app"]

ONCE = "Store it now: it cannot be shown again (Veil keeps only a slow hash of it)."

app = typer.Typer(
    help="Service keys: create (shown once), revoke, list. A service acts with VEIL_KEY=TOKEN.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept on the trail).")]


def _roles(info: ServiceKeyInfo) -> str:
    from veil.access import WORKSPACE  # noqa: PLC0415

    return ", ".join(f"{r}" + ("" if s == WORKSPACE else f" on '{s}'") for r, s in info.scopes)


def _table(keys: list[ServiceKeyInfo]) -> Table:
    table = Table()
    table.add_column("key id", no_wrap=True, min_width=12)
    table.add_column("service")
    table.add_column("roles")
    table.add_column("status", no_wrap=True)
    table.add_column("created (UTC)")
    table.add_column("expires (UTC)")
    styles = {"active": "green", "revoked": "red", "expired": "yellow"}
    for info in keys:
        expires = "never" if info.expires_at is None else f"{info.expires_at:%Y-%m-%d %H:%M}"
        table.add_row(
            info.key_id,
            Text(info.principal),
            Text(_roles(info)),
            Text(info.status, style=styles.get(info.status, "")),
            f"{info.created_at:%Y-%m-%d %H:%M}",
            expires,
        )
    return table


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="The service's name (it acts as svc:NAME).")],
    role: Annotated[
        str, typer.Option("--role", help="owner, analyst, auditor or consumer (required).")
    ],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Only on this dataset (default: the whole workspace)."),
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", help="Lifetime such as 90d, 12h, 30m (default: none)."),
    ] = None,
    reason: ReasonOption = "",
    as_json: JsonOption = False,
) -> None:
    """A new key for service svc:NAME holding ROLE (owners only; recorded, never its secret)."""
    lifetime = None if expires_in is None else parse_duration(expires_in, option="--expires-in")
    with open_access() as access:
        info, token = access.create_key(name, role, dataset, expires_in=lifetime, reason=reason)
    if as_json:
        print_json({"key": info.to_dict(), "token": token, "note": ONCE})
        return
    out.print(_table([info]))
    out.print(Text(token, style="bold"), soft_wrap=True)  # one line to copy
    out.print(Text(ONCE, style="bold yellow"))
    out.print(
        Text(
            "The service acts with VEIL_KEY=<token>; revoke the key with "
            f"`veil keys revoke {info.key_id}`."
        )
    )


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (veil keys list).")],
    reason: ReasonOption = "",
    as_json: JsonOption = False,
) -> None:
    """Revoke a key at once (owners only; recorded). Its service keeps its other keys."""
    with open_access() as access:
        info = access.revoke_key(key_id, reason=reason)
    if as_json:
        print_json({"key": info.to_dict()})
        return
    out.print(Text(f"Revoked key {info.key_id} of {info.principal}."))


@app.command("list")
def list_(
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only this service's keys (svc:NAME).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Every service key, newest first: id, service, scope, status. Never a secret."""
    with open_access() as access:
        keys = access.keys(principal=principal)
    if as_json:
        print_json({"keys": [k.to_dict() for k in keys]})
        return
    if not keys:
        out.print("No service key. Create one with `veil keys create NAME --role ROLE`.")
        return
    out.print(_table(keys))
