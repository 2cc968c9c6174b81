"""``veil access``: who may do what. Grant and revoke roles, list grants, say who acts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.table import Table
from rich.text import Text

from veil.cli._output import out, print_json

if TYPE_CHECKING:
    from veil.access import Access, Grant, Principal

# veil.access (SQLAlchemy, cryptography) is imported inside each command: `veil --help` stays fast.

__all__ = ["app", "describe_scope", "open_access"]

app = typer.Typer(
    help="Who may do what: grant and revoke roles, list grants, say who acts.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
PrincipalArg = Annotated[
    str, typer.Argument(help="An account name (a person), or svc:NAME (a service).")
]
RoleArg = Annotated[str, typer.Argument(help="owner, analyst, auditor or consumer.")]
DatasetOption = Annotated[
    str | None,
    typer.Option("--dataset", help="Only on this dataset (default: the whole workspace)."),
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept on the trail).")]


@contextmanager
def open_access() -> Iterator[Access]:
    """The workspace's :class:`~veil.access.Access` for whoever runs ``veil``; closed after."""
    from veil.access import Access  # noqa: PLC0415

    access = Access.open()
    try:
        yield access
    finally:
        access.store.dispose()


def describe_scope(scope: str) -> str:
    """``the workspace`` or ``dataset 'NAME'``, for messages and tables."""
    from veil.access import WORKSPACE  # noqa: PLC0415

    return "the workspace" if scope == WORKSPACE else f"dataset '{scope}'"


def _grant_rows(grants: list[Grant]) -> Table:
    table = Table("principal", "role", "on")
    for grant in grants:
        table.add_row(Text(grant.principal), str(grant.role), Text(describe_scope(grant.scope)))
    return table


def _change_grant(
    change: Literal["granted", "revoked"],
    principal: str,
    role: str,
    dataset: str | None,
    reason: str,
    as_json: bool,
) -> None:
    """Grant or revoke (``change`` says which) and print the grant changed, as JSON or a line."""
    with open_access() as access:
        apply = access.grant if change == "granted" else access.revoke
        changed = apply(principal, role, dataset, reason=reason)
    if as_json:
        print_json({change: changed.to_dict()})
        return
    to_or_from = "to" if change == "granted" else "from"
    scope = describe_scope(changed.scope)
    out.print(
        Text(f"{change.capitalize()} {changed.role} on {scope} {to_or_from} {changed.principal}.")
    )


@app.command()
def grant(
    principal: PrincipalArg,
    role: RoleArg,
    dataset: DatasetOption = None,
    reason: ReasonOption = "",
    as_json: JsonOption = False,
) -> None:
    """Give PRINCIPAL a ROLE on the workspace or one dataset (owners only; recorded)."""
    _change_grant("granted", principal, role, dataset, reason, as_json)


@app.command()
def revoke(
    principal: PrincipalArg,
    role: RoleArg,
    dataset: DatasetOption = None,
    reason: ReasonOption = "",
    as_json: JsonOption = False,
) -> None:
    """Take a ROLE on the workspace or one dataset from PRINCIPAL (owners only; recorded)."""
    _change_grant("revoked", principal, role, dataset, reason, as_json)


@app.command("list")
def list_(
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only this principal's grants.")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Only grants on this dataset or the whole workspace."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The grants in force (needs access.read: owners and auditors)."""
    with open_access() as access:
        grants = access.grants(principal=principal, dataset=dataset)
    if as_json:
        print_json({"grants": [g.to_dict() for g in grants]})
        return
    if not grants:
        out.print("No grant matches.")
        return
    out.print(_grant_rows(grants))


def _authenticated(principal: Principal) -> str:
    from veil.access import PrincipalKind  # noqa: PLC0415

    if principal.kind is PrincipalKind.SERVICE:
        return f"service key {principal.key_id} (VEIL_KEY)"
    return "operating-system account"


@app.command()
def whoami(as_json: JsonOption = False) -> None:
    """Who acts (the account running veil, or the service VEIL_KEY names) and the roles held."""
    with open_access() as access:
        principal = access.principal
        held = sorted(access.policy().grants)
    roles: list[dict[str, Any]] = [{"role": str(r), "scope": s} for r, s in held]
    if as_json:
        print_json(
            {
                "principal": principal.to_dict(),
                "authenticated_by": _authenticated(principal),
                "roles": roles,
            }
        )
        return
    out.print(Text(f"{principal.name} ({principal.kind}, by {_authenticated(principal)})"))
    if not held:
        out.print("No role: ask an owner for one (`veil access grant`).")
        return
    table = Table("role", "on")
    for role, scope in held:
        table.add_row(str(role), Text(describe_scope(scope)))
    out.print(table)
