"""Console sessions: a service key exchanged for a cookie, CSRF checks, the role check.

Signing in posts a service key (``veil keys create``) once; it is checked on
the same path as a bearer token (``veil.serve._auth.principal_of``: scrypt,
the worker's verify slots, refusals on the trail), and the browser gets a
random session token in a cookie that is ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page sends it) and scoped to
``/console``. The database keeps only the token's SHA-256 and the key id, so a
copy of the database opens no session. A session ends at sign-out (its row is
deleted), after :data:`SESSION_HOURS`, when the key expires, or as soon as the
key is revoked: every request reads the key's grants through
``Access.policy()``, which refuses a revoked key.

Every form that changes something carries a CSRF token derived from the
session token (HMAC-SHA256 keyed by it), so another site can neither read nor
forge it; the sign-in form, before a session exists, carries one derived from
a short-lived cookie of its own (a double-submit). A POST must also come from
the console's own origin when the browser says where it comes from
(``Origin``, ``Sec-Fetch-Site``).

:func:`console_needs` is the console's :func:`veil.serve._auth.needs`: the same
permission check against the same grants, for a caller identified by the
cookie instead of a bearer header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from sqlalchemy import delete

from veil.access import Permission, Principal, PrincipalKind, ServiceKeyInfo
from veil.errors import InvalidInputError, PermissionDeniedError, UnauthenticatedError
from veil.serve._auth import Caller, _held_anywhere
from veil.serve._state import ServeState, get_state
from veil.store.tables import ConsoleSessionRow, ServiceKeyRow

__all__ = [
    "PRE_COOKIE",
    "SESSION_COOKIE",
    "SESSION_HOURS",
    "Form",
    "SignInRequired",
    "close_key_sessions",
    "close_session",
    "console_needs",
    "csrf_token",
    "form_data",
    "open_session",
    "session_caller",
    "unauthenticated",
]

SESSION_COOKIE = "veil_session"
PRE_COOKIE = "veil_signin"  # the sign-in form's double-submit cookie
SESSION_HOURS = 8
_MAX_TOKEN = 128
_MAX_FIELDS = 64
_FORM_TYPE = "application/x-www-form-urlencoded"


class SignInRequired(Exception):  # noqa: N818 - a redirect, not an error
    """No valid session: a page answers with a redirect to the sign-in form."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Form(Mapping[str, str]):
    """A parsed form body: the first value of each field; :meth:`getlist` for all of them."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs
        self._first: dict[str, str] = {}
        for key, value in pairs:
            self._first.setdefault(key, value)

    def __getitem__(self, key: str) -> str:
        return self._first[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self._pairs if k == key]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def _mac(key: str, purpose: str) -> str:
    return hmac.new(key.encode("ascii", "replace"), purpose.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The CSRF token forms on this page must carry (session-bound, or the sign-in form's)."""
    session = getattr(request.state, "console_token", None)
    if session and not request.url.path.endswith("/sign-in"):
        return _mac(session, "veil-console-csrf/v1")
    pre = getattr(request.state, "console_pre", None) or request.cookies.get(PRE_COOKIE)
    if not pre or len(pre) > _MAX_TOKEN:
        pre = secrets.token_urlsafe(24)
        request.state.console_pre_new = pre  # the response sets it (see _home.sign_in_form)
    request.state.console_pre = pre
    return _mac(pre, "veil-console-sign-in/v1")


def _same_origin(request: Request) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    if site == "same-origin":
        # The browser vouches (no page can set Sec-Fetch-*), whatever Host a reverse proxy
        # forwarded: nginx, by default, sends the upstream's address, not the browser's.
        return True
    origin = request.headers.get("origin")
    if origin is None:  # a client that does not say; the CSRF token is still required
        return True
    if origin == "null":  # an opaque origin: believable only when the browser vouches for it
        return site == "same-origin"
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def _refused(why: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        "the form was refused: it did not come from this console page",
        expected="a form submitted from a page of this console (it carries a CSRF token)",
        got=why,
        fix="reload the page and submit the form again",
    )


async def form_data(request: Request) -> Form:
    """The POSTed form, after the same-origin and CSRF checks (a 403 when either fails).

    The body size is bounded by the gateway before the route runs
    (``--max-body``); only ``application/x-www-form-urlencoded`` is read.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != _FORM_TYPE:
        raise InvalidInputError(
            "the console's forms are sent as URL-encoded fields",
            expected=_FORM_TYPE,
            got=media or "no Content-Type",
            fix="submit the form from the console page",
        )
    raw = await request.body()
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
            max_num_fields=_MAX_FIELDS,
        )  # fmt: skip
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(
            "the form could not be read",
            expected=f"UTF-8 URL-encoded fields, at most {_MAX_FIELDS}",
            got=str(exc)[:200],
            fix="submit the form from the console page",
        ) from None
    form = Form(pairs)
    if not _same_origin(request):
        raise _refused(
            f"a request from another origin ({request.headers.get('origin') or 'unknown'})"
        )
    sent = form.get("csrf", "")
    # The token is bound to the session cookie's value; whether that session is valid is
    # console_needs's check (run for every console route, before or after this one).
    session = None if request.url.path.endswith("/sign-in") else request.cookies.get(SESSION_COOKIE)
    if session and len(session) <= _MAX_TOKEN:
        wanted = _mac(session, "veil-console-csrf/v1")
    else:
        pre = request.cookies.get(PRE_COOKIE)
        if not pre or len(pre) > _MAX_TOKEN:
            raise _refused("no sign-in cookie (cookies blocked, or the form is stale)")
        wanted = _mac(pre, "veil-console-sign-in/v1")
    if not sent or not hmac.compare_digest(sent, wanted):
        raise _refused("a missing or wrong CSRF token")
    return form


# ------------------------------------------------------------------ sessions
def _now() -> datetime:
    return datetime.now(UTC)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def open_session(state: ServeState, principal: Principal) -> tuple[str, datetime]:
    """A new session for ``principal``'s key: the cookie's token and when it expires."""
    token = secrets.token_urlsafe(32)
    expires = _now() + timedelta(hours=SESSION_HOURS)
    with state.store.session(lock=True) as session:
        key = session.get(ServiceKeyRow, principal.key_id)
        if key is not None and key.expires_at is not None:
            expires = min(expires, _aware(key.expires_at))
        session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at < _now()))
        session.add(
            ConsoleSessionRow(
                token_sha256=_digest(token), key_id=principal.key_id, expires_at=expires
            )
        )
    return token, expires


def close_session(state: ServeState, token: str) -> None:
    """Delete the session whose cookie carries ``token`` (sign-out)."""
    with state.store.session(lock=True) as session:
        session.execute(
            delete(ConsoleSessionRow).where(ConsoleSessionRow.token_sha256 == _digest(token))
        )


def close_key_sessions(state: ServeState, key_id: str) -> int:
    """Delete every session opened with ``key_id`` (its key was revoked); how many."""
    with state.store.session(lock=True) as session:
        result = session.execute(
            delete(ConsoleSessionRow).where(ConsoleSessionRow.key_id == key_id)
        )
        return int(getattr(result, "rowcount", 0) or 0)


def _principal(state: ServeState, key_id: str) -> Principal:
    with state.store.session() as session:
        row = session.get(ServiceKeyRow, key_id)
        info = None if row is None else ServiceKeyInfo.from_row(row)
    if info is None or info.status != "active":
        raise SignInRequired(
            f"the key this session was opened with is {info.status if info else 'gone'}"
        )
    return Principal(info.principal, PrincipalKind.SERVICE, key_id, info.scopes)


def session_caller(request: Request, state: ServeState) -> Caller:
    """The caller of a console request, from its session cookie (or :class:`SignInRequired`)."""
    known: Caller | None = getattr(request.state, "caller", None)
    if known is not None:
        return known
    client = request.client.host if request.client else "unknown"
    request.state.pre_auth = True  # a refusal here is a flood, as for a bearer token
    state.limits.hit_ip(client)
    request.state.pre_auth = False
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > _MAX_TOKEN:
        raise SignInRequired("not signed in")
    with state.store.session() as session:
        row = session.get(ConsoleSessionRow, _digest(token))
        found = None if row is None else (row.key_id, _aware(row.expires_at))
    if found is None:
        raise SignInRequired("the session has ended")
    key_id, expires = found
    if expires <= _now():
        close_session(state, token)
        raise SignInRequired("the session has expired")
    cache: dict[str, Principal] = request.app.state.veil_console_keys
    principal = cache.get(key_id)
    if principal is None:
        principal = _principal(state, key_id)
        cache[key_id] = principal
    access = state.access(principal)
    request.state.actor = principal.name
    request.state.key_id = key_id
    try:
        access.policy()  # a key revoked or expired since is refused here, on every request
    except PermissionDeniedError:
        cache.pop(key_id, None)
        state.forget(principal)
        close_key_sessions(state, key_id)
        raise SignInRequired(
            "the key this session was opened with was revoked or expired"
        ) from None
    request.state.console_token = token
    caller = Caller(principal=principal, access=access, key_id=key_id)
    request.state.caller = caller
    return caller


def console_needs(
    permission: Permission, *, dataset_param: str | None = None, any_dataset: bool = False
) -> Any:
    """The console's ``needs``: a signed-in caller holding ``permission`` (see the module)."""

    def dependency(request: Request, state: Annotated[ServeState, Depends(get_state)]) -> Caller:
        caller = session_caller(request, state)
        dataset = None if dataset_param is None else request.path_params.get(dataset_param)
        if any_dataset and dataset is None and _held_anywhere(caller.access, permission):
            return caller
        caller.access.require(permission, dataset, action=f"console:{permission.value}")
        return caller

    dependency.veil_permission = permission  # type: ignore[attr-defined]
    dependency.veil_dataset_param = dataset_param  # type: ignore[attr-defined]
    return Depends(dependency)


def unauthenticated(reason: str) -> UnauthenticatedError:
    """The 401 a console POST without a session gets (a GET is sent to the sign-in form)."""
    return UnauthenticatedError(
        "this console action needs you to be signed in",
        expected="a console session (sign in with a service key at /console/sign-in)",
        got=reason,
        fix="sign in again, then repeat the action",
    )
