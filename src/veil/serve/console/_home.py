"""The console's front door: sign-in, sign-out and the home page (see ``_session``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from veil.access import Permission
from veil.errors import PermissionDeniedError, UnauthenticatedError
from veil.serve._auth import Caller, annotate, principal_of
from veil.serve._state import ServeState, get_state
from veil.serve.console._render import redirect, render, sign_in_url
from veil.serve.console._session import (
    PRE_COOKIE,
    SESSION_COOKIE,
    Form,
    SignInRequired,
    close_session,
    form_data,
    open_session,
    session_caller,
)

router = APIRouter(prefix="/console", include_in_schema=False)

State = Annotated[ServeState, Depends(get_state)]
_MAX_KEY = 256


def signed_in(request: Request, state: State) -> Caller:
    """Any signed-in caller (the home page shows each what their roles allow)."""
    return session_caller(request, state)


def _next(value: str | None) -> str:
    """Where to go after sign-in: a console path only (never another site)."""
    if not value or not value.startswith("/console") or value.startswith("//"):
        return "/console"
    if "\\" in value or not value.isprintable() or value.startswith("/console/sign-"):
        return "/console"
    return value


# (section, title, permission that opens it, whether holding it on one dataset is enough)
SECTIONS: tuple[tuple[str, str, Permission], ...] = (
    ("datasets", "Datasets", Permission.DATASET_READ_METADATA),
    ("models", "Models", Permission.MODEL_READ),
    ("trail", "Trail", Permission.TRAIL_READ),
    ("access", "Access", Permission.ACCESS_READ),
)


def sections(caller: Caller) -> list[dict[str, Any]]:
    """The sections ``caller``'s grants open (a grant on one dataset opens its section)."""
    from veil.access import ROLE_PERMISSIONS  # noqa: PLC0415

    held = set().union(*(ROLE_PERMISSIONS[role] for role, _ in caller.access.policy().grants))
    return [
        {"id": key, "title": title, "url": f"/console/{key}"}
        for key, title, permission in SECTIONS
        if permission in held
    ]


@router.get("", response_class=Response)
def home(request: Request, caller: Annotated[Caller, Depends(signed_in)]) -> Response:
    return render(
        request, "home.html", caller=caller, title="Veil console", nav="home",
        sections=sections(caller),
    )  # fmt: skip


@router.get("/sign-in", response_class=Response)
def sign_in_form(request: Request, next: str | None = None) -> Response:  # noqa: A002
    return render(
        request, "sign_in.html", caller=None, title="Sign in", next=_next(next), error=None
    )


def _check_key_field(token: str) -> None:
    if not token or len(token) > _MAX_KEY:
        raise UnauthenticatedError(
            "no service key was given" if not token else "that is too long to be a service key",
            expected=f"a key of the form veil_sk_<id>_<secret> (at most {_MAX_KEY} characters)",
            got="an empty field" if not token else f"{len(token)} characters",
            fix="paste the key an owner created with `veil keys create`, and nothing else",
        )


@router.post("/sign-in", response_class=Response)
def sign_in(request: Request, state: State, form: Annotated[Form, Depends(form_data)]) -> Response:
    token = form.get("key", "").strip()
    goto = _next(form.get("next"))
    client = request.client.host if request.client else "unknown"
    request.state.pre_auth = True
    state.limits.hit_ip(client)  # a guessing loop meets the per-address limit
    request.state.pre_auth = False
    try:
        _check_key_field(token)
        principal, _ = principal_of(request, state, token)
        request.state.actor = principal.name
        request.state.key_id = principal.key_id
        state.access(principal).policy()  # refuses a key revoked since it was verified
    except (UnauthenticatedError, PermissionDeniedError) as exc:
        request.state.error_code = "unauthenticated"
        annotate(request, console="sign-in refused")
        return render(
            request, "sign_in.html", caller=None, status_code=401, title="Sign in",
            next=goto, error=exc.message,
        )  # fmt: skip
    session_token, expires = open_session(state, principal)
    annotate(request, console="signed in")
    response = redirect(goto)
    response.set_cookie(
        SESSION_COOKIE, session_token, expires=expires, path="/console", httponly=True,
        samesite="strict", secure=request.url.scheme == "https",
    )  # fmt: skip
    response.delete_cookie(PRE_COOKIE, path="/console")
    return response


@router.post("/sign-out", response_class=Response)
def sign_out(
    request: Request,
    state: State,
    caller: Annotated[Caller, Depends(signed_in)],
    form: Annotated[Form, Depends(form_data)],  # noqa: ARG001 - the CSRF check
) -> Response:
    close_session(state, request.cookies.get(SESSION_COOKIE, ""))
    annotate(request, console="signed out", key=caller.key_id)
    response = redirect("/console/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


def sign_in_redirect(request: Request, exc: Exception) -> Response:
    """:class:`SignInRequired` on a page: to the sign-in form; on an action: a 401 page."""
    assert isinstance(exc, SignInRequired)  # noqa: S101 - registered for it only
    if request.method in ("GET", "HEAD"):
        response: Response = redirect(sign_in_url(request))
    else:
        from veil.serve.console._render import error_page  # noqa: PLC0415

        response = error_page(
            request,
            401,
            {
                "code": "unauthenticated",
                "message": "this console action needs you to be signed in",
                "expected": "a console session (sign in with a service key)",
                "got": exc.reason,
                "fix": "sign in again, then repeat the action",
                "details": {},
            },
            None,
        )
    request.state.error_code = "unauthenticated"
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path="/console")
    return response
