"""The console's access page: grants and service keys; grant, revoke, revoke a key.

``GET /console/access`` (``access.read``) shows the grants in force and every
service key (id, service, roles, created, expires, status; never a secret). To
a holder of ``access.manage`` it adds a form to grant a role and a button per
grant and per key to revoke it: each a POST form carrying the session's CSRF
token, answered with a redirect back to the page and a notice (POST, redirect,
GET), or with the page again and the problem (422 for a form the ``/v1``
schema refuses, 404 or 409 for the library's refusals).

Each action calls the function its ``/v1/access`` route calls
(``veil.serve._access_routes``): the same checks by the access library, the
same trail entries, the same body model for a grant. A key that holds
``access.read`` on one dataset only sees that dataset's grants, and no keys
(the library lists keys to workspace readers only).

Revoking the key the page is signed in with is allowed: its row says so, and
the session ends with the revocation. New keys are made with ``veil keys
create`` only: a token shown in a page would sit in the browser's memory and
history (see ``docs/console.md``).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from veil.access import ROLE_PERMISSIONS, WORKSPACE, Grant, Permission, Role, ServiceKeyInfo
from veil.errors import VeilError
from veil.serve._access_routes import (
    GrantBody,
    KeyId,
    RevokeKeyBody,
    grant_role,
    list_grants,
    list_keys,
    revoke_role,
    revoke_service_key,
)
from veil.serve._auth import Caller
from veil.serve._errors import status_of
from veil.serve._state import ServeState, get_state
from veil.serve.console._render import redirect, render
from veil.serve.console._session import Form, console_needs, form_data

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

State = Annotated[ServeState, Depends(get_state)]
PAGE = "/console/access"
ROLES = [r.value for r in Role]
DONE = {
    "grant": "The role was granted.",
    "revoke": "The role was revoked.",
    "key": "The key was revoked: its next request is refused.",
}
_FIELDS = ("principal", "role", "dataset", "reason")


def _label(scope: str) -> str:
    return "the workspace" if scope == WORKSPACE else f"dataset {scope}"


def _dataset(scope: str) -> str | None:
    return None if scope == WORKSPACE else scope


def _visible_grants(caller: Caller) -> list[Grant]:
    """The grants the caller may read: all of them, or those of its datasets' scopes."""
    access = caller.access
    if access.allows(Permission.ACCESS_READ):
        return list_grants(access)
    datasets = sorted(
        {
            scope
            for role, scope in access.policy().grants
            if scope != WORKSPACE and Permission.ACCESS_READ in ROLE_PERMISSIONS[role]
        }
    )
    seen: dict[Grant, None] = {}
    for dataset in datasets:
        seen.update(dict.fromkeys(list_grants(access, dataset=dataset)))
    return sorted(seen)


def _grant_rows(caller: Caller, grants: list[Grant]) -> list[dict[str, Any]]:
    return [
        {
            "principal": g.principal,
            "role": str(g.role),
            "scope": g.scope,
            "on": _label(g.scope),
            "dataset": _dataset(g.scope) or "",
            "may_revoke": caller.access.allows(Permission.ACCESS_MANAGE, _dataset(g.scope)),
        }
        for g in grants
    ]


def _key_rows(caller: Caller, keys: list[ServiceKeyInfo]) -> list[dict[str, Any]]:
    rows = []
    for info in keys:
        scopes = [f"{role}" + (f" on {s}" if s != WORKSPACE else "") for role, s in info.scopes]
        dataset = _dataset(info.scopes[0][1]) if info.scopes else None
        rows.append(
            {
                "key_id": info.key_id,
                "principal": info.principal,
                "roles": ", ".join(scopes) or "none",
                "created_at": info.created_at,
                "created_by": info.created_by,
                "expires_at": info.expires_at,
                "status": info.status,
                "own": info.key_id == caller.key_id,
                "may_revoke": info.status == "active"
                and caller.access.allows(Permission.ACCESS_MANAGE, dataset),
            }
        )
    return rows


def _page(
    request: Request,
    caller: Caller,
    *,
    notice: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    problems: list[str] | None = None,
    status: int = HTTPStatus.OK,
) -> HTMLResponse:
    access = caller.access
    reads_keys = access.allows(Permission.ACCESS_READ)
    keys = list_keys(access) if reads_keys else None
    manages = any(
        Permission.ACCESS_MANAGE in ROLE_PERMISSIONS[r] for r, _ in access.policy().grants
    )
    return render(
        request,
        "access/index.html",
        caller=caller,
        title="Access",
        nav="access",
        notice=notice,
        status_code=status,
        grants=_grant_rows(caller, _visible_grants(caller)),
        keys=None if keys is None else _key_rows(caller, keys),
        manages=manages,
        role_options=ROLES,
        form=form or {"principal": "", "role": str(Role.ANALYST), "dataset": "", "reason": ""},
        problems=problems or [],
    )


@router.get("/access")
def access_page(
    request: Request,
    caller: Annotated[Caller, console_needs(Permission.ACCESS_READ, any_dataset=True)],
) -> HTMLResponse:
    """Grants and keys (``GET /v1/access/grants`` and ``/keys``), with the owner's forms."""
    done = DONE.get(request.query_params.get("done", ""))
    notice = None if done is None else {"kind": "ok", "text": done}
    return _page(request, caller, notice=notice)


def _grant_form(form: Form) -> dict[str, str]:
    return {name: form.get(name, "").strip() for name in _FIELDS}


def _body(kept: dict[str, str]) -> GrantBody:
    """The form as the ``/v1`` route's body (the same schema, so the same refusals)."""
    return GrantBody.model_validate(
        {
            "principal": kept["principal"],
            "role": kept["role"],
            "dataset": kept["dataset"] or None,
            "reason": kept["reason"],
        }
    )


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for item in exc.errors()[:10]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "form"
        message = str(item.get("msg", "invalid"))
        if where == "role":
            message = f"{message} (got {item.get('input')!r}; the roles: {', '.join(ROLES)})"
        out.append(f"{where}: {message}")
    return out


def _refused(
    request: Request, caller: Caller, exc: VeilError, kept: dict[str, str] | None
) -> Response:
    """The library's refusal of an action, shown on the page (a 403 is the error page's)."""
    status = status_of(exc)
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR or exc.code == "permission_denied":
        raise exc
    request.state.error_code = exc.code
    problem = f"{exc.message}. Expected {exc.expected}; got {exc.got}. {exc.fix or ''}".strip()
    return _page(request, caller, form=kept, problems=[problem], status=status)


def _change(
    request: Request, caller: Caller, state: ServeState, form: Form, *, grant: bool
) -> Response:
    kept = _grant_form(form)
    try:
        body = _body(kept)
    except ValidationError as exc:
        request.state.error_code = "invalid_input"
        return _page(
            request,
            caller,
            form=kept if grant else None,
            problems=_problems(exc),
            status=HTTPStatus.UNPROCESSABLE_ENTITY,
        )
    try:
        if grant:
            grant_role(
                request, caller, body.principal, body.role, dataset=body.dataset, reason=body.reason
            )
        else:
            revoke_role(
                request,
                state,
                caller,
                body.principal,
                body.role,
                dataset=body.dataset,
                reason=body.reason,
            )
    except VeilError as exc:  # a failed revoke leaves the grant form empty
        return _refused(request, caller, exc, kept if grant else None)
    return redirect(f"{PAGE}?done={'grant' if grant else 'revoke'}")


@router.post("/access/grants", response_model=None)
def grant_action(
    request: Request,
    caller: Annotated[Caller, console_needs(Permission.ACCESS_MANAGE, any_dataset=True)],
    form: Annotated[Form, Depends(form_data)],
    state: State,
) -> Response:
    """Grant a role (``POST /v1/access/grants``'s function); back to the page."""
    return _change(request, caller, state, form, grant=True)


@router.post("/access/grants/revoke", response_model=None)
def revoke_action(
    request: Request,
    caller: Annotated[Caller, console_needs(Permission.ACCESS_MANAGE, any_dataset=True)],
    form: Annotated[Form, Depends(form_data)],
    state: State,
) -> Response:
    """Revoke a role (``POST /v1/access/grants/revoke``'s function); back to the page."""
    return _change(request, caller, state, form, grant=False)


@router.post("/access/keys/{key_id}/revoke", response_model=None)
def revoke_key_action(
    request: Request,
    key_id: KeyId,
    caller: Annotated[Caller, console_needs(Permission.ACCESS_MANAGE, any_dataset=True)],
    form: Annotated[Form, Depends(form_data)],
    state: State,
) -> Response:
    """Revoke a key (``POST /v1/access/keys/{key_id}/revoke``'s function); back to the page.

    The caller's own key is revoked too when asked: the session ends with it, so
    the redirect lands on the sign-in form.
    """
    try:
        body = RevokeKeyBody.model_validate({"reason": form.get("reason", "").strip()})
    except ValidationError as exc:
        request.state.error_code = "invalid_input"
        return _page(
            request, caller, problems=_problems(exc), status=HTTPStatus.UNPROCESSABLE_ENTITY
        )
    try:
        _, own = revoke_service_key(request, state, caller, key_id, reason=body.reason)
    except VeilError as exc:
        return _refused(request, caller, exc, None)
    if own:
        return redirect(f"/console/sign-in?next={PAGE}")
    return redirect(f"{PAGE}?done=key")
