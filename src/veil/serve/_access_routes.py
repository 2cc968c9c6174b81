"""Who may do what, over HTTP: list, grant and revoke roles; list and revoke service keys.

The routes call :class:`~veil.access.Access` (``grants``, ``grant``,
``revoke``, ``keys``, ``revoke_key``) as the acting key, so the checks, the
refusals and the trail entries (``access.grant``, ``access.revoke``,
``keys.revoke``, refusals by the missing permission) are the library's, the
same as ``veil access`` and ``veil keys``. The console's access page
(``veil.serve.console._access``) calls the functions below, not the library
directly: one path, one set of checks.

A route's ``needs`` admits a key that holds the permission on the workspace or
on some dataset (``any_dataset``); the library then checks it on the grant's
dataset (or the key's), so the owner of one dataset manages that dataset's
grants and keys and nothing else, as on the command line.

**No key creation over HTTP.** A new key's token would travel in an HTTP
response (and, from the console, sit in a rendered page and the browser's
memory): a larger surface than the owner's terminal, for a rare operation.
Keys are made with ``veil keys create`` on the workspace's machine.

**At once in this worker.** Revoking a key drops this worker's verified
tokens and :class:`Access` for it (``forget_key``): its next bearer request is
checked against the database and refused (401); its console sessions are
deleted, so every worker signs them out at once.
Revoking a role drops this worker's :class:`Access` of each key of that
principal, so the role stops working at once here too. Other workers notice
within ``Access.max_age`` (one second).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select

from veil.access import (
    WORKSPACE,
    Access,
    Grant,
    Permission,
    Principal,
    PrincipalKind,
    Role,
    ServiceKeyInfo,
)
from veil.serve._auth import Caller, annotate, forget_key, needs, permission_extra
from veil.serve._errors import ERROR_RESPONSES
from veil.serve._state import ServeState, get_state
from veil.serve.console._session import close_key_sessions
from veil.store.tables import ServiceKeyRow

__all__ = [
    "GrantBody",
    "GrantList",
    "KeyList",
    "RevokeKeyBody",
    "grant_role",
    "list_grants",
    "list_keys",
    "revoke_role",
    "revoke_service_key",
    "router",
]

router = APIRouter(prefix="/v1/access", tags=["access"], responses=ERROR_RESPONSES)

State = Annotated[ServeState, Depends(get_state)]
PrincipalName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    Field(description="An account name (a person), or svc:NAME (a service)."),
]
DatasetName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
    Field(description="Only on this dataset (omitted or null: the whole workspace)."),
]
Reason = Annotated[
    str, StringConstraints(max_length=500), Field(description="Why (kept on the trail).")
]
KeyId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[0-9A-Za-z]+$",
        description="A key's id (`veil keys list`, `GET /v1/access/keys`).",
    ),
]


# ---------------------------------------------------------------- bodies and answers
class GrantBody(BaseModel):
    """A role for a principal on the workspace or one dataset."""

    model_config = ConfigDict(extra="forbid")

    principal: PrincipalName
    role: Role = Field(description="owner, analyst, auditor or consumer.")
    dataset: DatasetName | None = None
    reason: Reason = ""


class RevokeKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = ""


class GrantOut(BaseModel):
    principal: str
    role: Role
    scope: str = Field(description="A dataset's name, or '*' for the whole workspace.")

    @classmethod
    def of(cls, grant: Grant) -> GrantOut:
        return cls(principal=grant.principal, role=grant.role, scope=grant.scope)


class GrantList(BaseModel):
    grants: list[GrantOut]


class Granted(BaseModel):
    granted: GrantOut


class Revoked(BaseModel):
    revoked: GrantOut


class KeyScope(BaseModel):
    role: Role
    scope: str


class KeyOut(BaseModel):
    """A service key as listed: never its secret nor its hash."""

    key_id: str
    principal: str
    scopes: list[KeyScope]
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None
    status: Literal["active", "revoked", "expired"]

    @classmethod
    def of(cls, info: ServiceKeyInfo) -> KeyOut:
        return cls.model_validate(info.to_dict())


class KeyList(BaseModel):
    keys: list[KeyOut]


class KeyRevoked(BaseModel):
    key: KeyOut
    own_key: bool = Field(
        description="The key revoked is the one that asked: its next request is refused."
    )


# ---------------------------------------------------------------- the functions both use
def _dataset_of(scope: str) -> str | None:
    return None if scope == WORKSPACE else scope


def list_grants(
    access: Access, *, principal: str | None = None, dataset: str | None = None
) -> list[Grant]:
    """The grants in force (``Access.grants``: needs ``access.read`` on ``dataset``)."""
    return access.grants(principal=principal, dataset=dataset)


def list_keys(access: Access, *, principal: str | None = None) -> list[ServiceKeyInfo]:
    """Every service key, newest first (``Access.keys``: ``access.read`` on the workspace)."""
    return access.keys(principal=principal)


def grant_role(
    request: Request,
    caller: Caller,
    principal: str,
    role: Role | str,
    *,
    dataset: str | None = None,
    reason: str = "",
) -> Grant:
    """``Access.grant`` as the caller, named on this request's trail entry."""
    annotate(request, dataset=dataset, change="grant", principal=principal, role=str(role))
    grant = caller.access.grant(principal, role, dataset, reason=reason)
    annotate(request, scope=grant.scope)
    return grant


def revoke_role(
    request: Request,
    state: ServeState,
    caller: Caller,
    principal: str,
    role: Role | str,
    *,
    dataset: str | None = None,
    reason: str = "",
) -> Grant:
    """``Access.revoke`` as the caller; this worker forgets what it held for the principal's keys.

    The last owner of the workspace cannot be revoked (the library's 409 ``conflict``).
    """
    annotate(request, dataset=dataset, change="revoke", principal=principal, role=str(role))
    grant = caller.access.revoke(principal, role, dataset, reason=reason)
    annotate(request, scope=grant.scope)
    with state.store.session() as session:
        key_ids = session.scalars(
            select(ServiceKeyRow.key_id).where(ServiceKeyRow.principal == principal)
        ).all()
    for key_id in key_ids:
        state.forget(Principal(principal, PrincipalKind.SERVICE, key_id))
    return grant


def revoke_service_key(
    request: Request, state: ServeState, caller: Caller, key_id: str, *, reason: str = ""
) -> tuple[ServiceKeyInfo, bool]:
    """``Access.revoke_key`` as the caller, refused by this worker from the key's next request.

    Returns the key as it now stands and whether it is the caller's own key
    (allowed: the caller is signed out by its next request).
    """
    annotate(request, change="revoke_key", revoked_key=key_id)
    info = caller.access.revoke_key(key_id, reason=reason)
    annotate(request, dataset=_dataset_of(info.scopes[0][1]) if info.scopes else None)
    forget_key(request, state, Principal(info.principal, PrincipalKind.SERVICE, info.key_id))
    close_key_sessions(state, info.key_id)  # its console sessions end in every worker
    return info, info.key_id == caller.key_id


# ---------------------------------------------------------------- routes
@router.get(
    "/grants",
    response_model=GrantList,
    openapi_extra=permission_extra(Permission.ACCESS_READ),
    summary="The grants in force (optionally one principal's, or those on one dataset)",
)
def get_grants(
    request: Request,
    caller: Annotated[Caller, needs(Permission.ACCESS_READ, any_dataset=True)],
    principal: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Only this principal's.")
    ] = None,
    dataset: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            description="Only grants on this dataset or the whole workspace (needed by a "
            "key that reads access on one dataset only).",
        ),
    ] = None,
) -> GrantList:
    annotate(request, dataset=dataset)
    grants = list_grants(caller.access, principal=principal, dataset=dataset)
    return GrantList(grants=[GrantOut.of(g) for g in grants])


@router.post(
    "/grants",
    response_model=Granted,
    openapi_extra=permission_extra(Permission.ACCESS_MANAGE),
    summary="Give a principal a role on the workspace or one dataset",
)
def post_grant(
    request: Request,
    body: GrantBody,
    caller: Annotated[Caller, needs(Permission.ACCESS_MANAGE, any_dataset=True)],
) -> Granted:
    grant = grant_role(
        request, caller, body.principal, body.role, dataset=body.dataset, reason=body.reason
    )
    return Granted(granted=GrantOut.of(grant))


@router.post(
    "/grants/revoke",
    response_model=Revoked,
    openapi_extra=permission_extra(Permission.ACCESS_MANAGE),
    summary="Take a role on the workspace or one dataset from a principal",
)
def post_revoke(
    request: Request,
    body: GrantBody,
    caller: Annotated[Caller, needs(Permission.ACCESS_MANAGE, any_dataset=True)],
    state: State,
) -> Revoked:
    grant = revoke_role(
        request, state, caller, body.principal, body.role, dataset=body.dataset, reason=body.reason
    )
    return Revoked(revoked=GrantOut.of(grant))


@router.get(
    "/keys",
    response_model=KeyList,
    openapi_extra=permission_extra(Permission.ACCESS_READ),
    summary="Every service key, newest first (ids, services, roles, status; never a secret)",
)
def get_keys(
    caller: Annotated[Caller, needs(Permission.ACCESS_READ)],
    principal: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Only this service's keys.")
    ] = None,
) -> KeyList:
    return KeyList(keys=[KeyOut.of(k) for k in list_keys(caller.access, principal=principal)])


@router.post(
    "/keys/{key_id}/revoke",
    response_model=KeyRevoked,
    openapi_extra=permission_extra(Permission.ACCESS_MANAGE),
    summary="Revoke a service key at once (its service keeps its other keys)",
)
def post_revoke_key(
    request: Request,
    key_id: KeyId,
    caller: Annotated[Caller, needs(Permission.ACCESS_MANAGE, any_dataset=True)],
    state: State,
    body: RevokeKeyBody | None = None,
) -> KeyRevoked:
    reason = body.reason if body is not None else ""
    info, own = revoke_service_key(request, state, caller, key_id, reason=reason)
    return KeyRevoked(key=KeyOut.of(info), own_key=own)
