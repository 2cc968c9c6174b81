"""Rendering the console: one Jinja2 environment, the page context, HTML refusals.

Autoescaping is on for every template (a dataset name, a purpose or a trail
entry is text, never markup), undefined names fail loudly, and pages carry no
inline script or style: the Content-Security-Policy the gateway sends with
every ``/console`` response (:data:`CSP`) allows only this origin's files.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from veil import __version__
from veil.access import WORKSPACE, Permission
from veil.serve._auth import Caller

__all__ = ["CSP", "STATIC_PREFIX", "error_page", "redirect", "render", "sign_in_url", "static_url"]

STATIC_PREFIX = "/console/static"
_SMALL = 1e-3  # below this an epsilon is shown in significant digits
# Nothing from anywhere else, no inline script or style, no plugins, not framed by others.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer makes Chromium send Origin: null
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
)


# The CSRF token of the page being rendered, for the ``csrf()`` macro (macros imported without
# the page's context still reach it; a ContextVar keeps concurrent renders apart).
_CSRF: ContextVar[str] = ContextVar("veil_console_csrf", default="")


def _csrf_value() -> str:
    return str(_CSRF.get())


def static_url(path: str) -> str:
    """The URL of a file the package ships under ``console/static`` (versioned for caches)."""
    return f"{STATIC_PREFIX}/{quote(path)}?v={__version__}"


def _eps(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    number = float(value)
    if math.isinf(number):
        return "∞"
    if math.isnan(number):
        return "—"
    small = number and abs(number) < _SMALL
    return f"{number:.{digits}g}" if small else f"{number:.{digits}f}"


def _when(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return str(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    return str(value)


@lru_cache(maxsize=1)
def environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined  # noqa: PLC0415

    env = Environment(
        loader=PackageLoader("veil.serve.console", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters["eps"] = _eps
    env.filters["when"] = _when
    env.globals["static"] = static_url
    env.globals["version"] = __version__
    env.globals["csrf_value"] = _csrf_value
    return env


def _roles(caller: Caller | None) -> list[str]:
    if caller is None:
        return []
    grants = caller.access.policy().grants
    return sorted(
        f"{role}" + ("" if scope == WORKSPACE else f" on {scope}") for role, scope in grants
    )


def _held(caller: Caller | None) -> frozenset[str]:
    """Permissions ``caller`` holds on the workspace or on at least one dataset (for the nav)."""
    if caller is None:
        return frozenset()
    from veil.access import ROLE_PERMISSIONS  # noqa: PLC0415

    grants = caller.access.policy().grants
    return frozenset(str(p) for role, _ in grants for p in ROLE_PERMISSIONS[role])


def render(
    request: Request,
    template: str,
    *,
    caller: Caller | None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """``template`` rendered with the page context (see the console contract in docs)."""
    from veil.serve.console._session import csrf_token  # noqa: PLC0415 - a cycle otherwise

    def can(permission: Permission | str, dataset: str | None = None) -> bool:
        if caller is None:
            return False
        return caller.access.allows(Permission(permission), dataset)

    page = {
        "request": request,
        "caller": caller,
        "csrf": csrf_token(request),
        "roles": _roles(caller),
        "held": _held(caller),
        "can": can,
        "nav": context.pop("nav", None),
        "title": context.pop("title", "Veil console"),
        "notice": context.pop("notice", None),
        **context,
    }
    reset = _CSRF.set(page["csrf"])
    try:
        html = environment().get_template(template).render(page)
    finally:
        _CSRF.reset(reset)
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    response.headers["cache-control"] = "no-store"
    fresh = getattr(request.state, "console_pre_new", None)
    if fresh:
        from veil.serve.console._session import PRE_COOKIE  # noqa: PLC0415

        response.set_cookie(
            PRE_COOKIE, fresh, max_age=3600, path="/console", httponly=True,
            samesite="strict", secure=request.url.scheme == "https",
        )  # fmt: skip
    return response


_MAX_NEXT_QUERY = 1000  # a longer query string is dropped from ``next`` (the page is kept)


def sign_in_url(request: Request) -> str:
    """The sign-in form's address, with the page asked for (and its filters) as ``next``."""
    target = request.url.path
    query = request.url.query
    if query and len(query) <= _MAX_NEXT_QUERY:
        target = f"{target}?{query}"
    return f"/console/sign-in?next={quote(target, safe='/')}"


def redirect(url: str) -> RedirectResponse:
    """See-other to ``url`` (after a form that changed something: POST, redirect, GET)."""
    return RedirectResponse(url, status_code=HTTPStatus.SEE_OTHER)


# Headers of a refusal a page keeps: when to retry (429), which methods the address takes (405).
_KEPT_HEADERS = ("retry-after", "allow")
_PLACES = (("path.", "the address's "), ("query.", "the address's "), ("body.", "the form's "))


def _for_people(
    request: Request, status: int, error: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    """The API's refusals of a malformed request, reworded for a person at a console page.

    The gateway's generic refusals (no route, wrong method, a parameter off the
    schema) point to the OpenAPI schema, which is the JSON API's contract, not
    the console's; the page says instead what the address or form should be.
    """
    method = request.method
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        allowed = next((v for k, v in headers.items() if k.lower() == "allow"), "")
        ways = {"GET": "GET (open it as a page)", "POST": "POST (send a form from a page)"}
        return {
            **error,
            "message": f"this console address does not take {method} requests",
            "expected": ", ".join(ways.get(m.strip(), m.strip()) for m in allowed.split(","))
            or "another method",
            "got": f"{method} {request.url.path}",
            "fix": "open pages from the console's links and send forms with their buttons",
        }
    if status == HTTPStatus.NOT_FOUND and "OpenAPI" in str(error.get("expected", "")):
        return {
            **error,
            "message": "there is no console page at this address",
            "expected": "an address from the console's links",
            "got": request.url.path[:200],
            "fix": "start again from the console's home page",
        }
    if "OpenAPI" in str(error.get("expected", "")):
        got = str(error.get("got", ""))
        for prefix, place in _PLACES:
            got = got.replace(prefix, place)
        return {
            **error,
            "message": "a value in this address or form is not one the console takes",
            "expected": "an address from the console's links, or a form filled in on its page",
            "got": got[:400],
            "fix": "follow the console's links, or correct the value named above",
        }
    return error


def error_page(
    request: Request, status: int, error: dict[str, Any], headers: dict[str, str] | None
) -> Response:
    """A refusal on a console path, as a page (a GET without a session goes to sign-in)."""
    if status == HTTPStatus.UNAUTHORIZED and request.method in ("GET", "HEAD"):
        return redirect(sign_in_url(request))
    kept = {k: v for k, v in (headers or {}).items() if k.lower() in _KEPT_HEADERS}
    error = _for_people(request, status, error, kept)
    caller = getattr(request.state, "caller", None)
    try:
        return render(
            request,
            "error.html",
            caller=caller,
            status_code=status,
            headers=kept,
            title=f"{status} {HTTPStatus(status).phrase}",
            error=error,
            status=status,
        )
    except Exception:  # noqa: BLE001 - a page that cannot render still says what went wrong
        from html import escape  # noqa: PLC0415

        text = escape(str(error.get("message", "error")))
        return HTMLResponse(f"<!doctype html><title>{status}</title><p>{text}</p>", status)
