"""Who is calling and what they may do: bearer service keys and per-endpoint permissions.

Every ``/v1`` route takes ``caller: Caller = needs(Permission.X)``. The
dependency, in this order:

1. applies the per-address limit that comes before any database work (a flood
   of made-up keys cannot make the trail or the key table do work at will);
2. reads ``Authorization: Bearer veil_sk_<id>_<secret>`` and authenticates it
   through :meth:`veil.access.Access.authenticate` (a malformed, unknown,
   revoked or expired key is a 401 ``unauthenticated``, and ``key.use
   refused`` is on the trail); a token this worker has not verified yet is
   checked in one of a few slots (scrypt costs a made-up secret as much as a
   real one), a 429 when none is free;
3. checks ``permission`` with the key's :class:`~veil.access.Access` on the
   dataset named by the route's ``dataset_param`` (else on the workspace): a
   403 ``permission_denied``, recorded by ``Access.require``.

The permission a route needs is also in its OpenAPI operation
(``x-veil-permission``) and on the dependency (``veil_permission``), where a
test checks that no ``/v1`` route lacks one. A verified token is kept per
process by its SHA-256 (the slow hash runs once per key and process); a
revocation reaches every worker within ``Access.max_age`` (one second), since
each request asks the key's Access for its grants, which re-reads them when
the workspace's access generation moved.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from veil.access import ROLE_PERMISSIONS, Access, Permission, Principal, parse_key
from veil.errors import PermissionDeniedError, RateLimitedError, UnauthenticatedError
from veil.serve._state import VERIFY_SLOTS, ServeState, get_state

__all__ = [
    "Caller",
    "annotate",
    "authenticate",
    "cached_caller",
    "forget_key",
    "needs",
    "permission_extra",
    "principal_of",
]

_PREFIX = "bearer "
_MAX_TOKEN = 256
_MAX_DATASET = 128  # the trail's dataset column
_FOLLOW_SECONDS = 10.0  # how long a request waits for a check of its token already running


@dataclass(frozen=True)
class Caller:
    """The authenticated principal of a request, with its :class:`Access`."""

    principal: Principal
    access: Access
    key_id: str


def annotate(
    request: Request,
    *,
    dataset: str | None = None,
    purpose: str | None = None,
    usage: tuple[str, int] | None = None,
    **details: Any,
) -> None:
    """Add to this request's ``serve.request`` trail entry.

    ``details`` must be JSON values that name things (ids, counts, parameters),
    never values from the data or secrets. ``usage=(model, records)`` counts the
    records answered toward the key's count budget when the entry is flushed.
    """
    state = request.state
    if dataset is not None:
        if 0 < len(dataset) <= _MAX_DATASET and "\x00" not in dataset:
            state.trail_dataset = dataset
        else:  # a filter as sent (empty, too long): named in the details, not as the dataset
            details = {**details, "dataset_asked": dataset[:_MAX_DATASET].replace("\x00", "?")}
    if purpose is not None:
        state.trail_purpose = purpose
    if usage is not None:
        state.usage = usage
    if details:
        noted: dict[str, Any] = getattr(state, "trail_details", None) or {}
        noted.update(details)
        state.trail_details = noted


def _token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise UnauthenticatedError(
            "this endpoint needs a service key",
            expected="an Authorization: Bearer veil_sk_<id>_<secret> header",
            got="no Authorization header",
            fix="ask an owner for a key (`veil keys create NAME --role ROLE`) and send it as a bearer token",
        )
    if len(header) > _MAX_TOKEN + len(_PREFIX) or not header.lower().startswith(_PREFIX):
        raise UnauthenticatedError(
            "the Authorization header is not a bearer service key",
            expected="Authorization: Bearer veil_sk_<id>_<secret>",
            got=f"a header of {len(header)} characters starting {header[:7]!r}",
            fix="send the key from `veil keys create` as a bearer token",
        )
    return header[len(_PREFIX) :].strip()


def _unauthenticated(error: PermissionDeniedError) -> UnauthenticatedError:
    # Access's fix speaks to the command line (VEIL_KEY); an HTTP caller has no such variable.
    return UnauthenticatedError(
        error.message,
        expected=error.expected,
        got=error.got,
        fix="ask an owner for a new key (`veil keys create NAME --role ROLE`) and send it as "
        "a bearer token",
        details=error.details,
    )


def authenticate(request: Request, state: ServeState) -> Caller:
    """The request's :class:`Caller` (cached on the request), or a 401."""
    known: Caller | None = getattr(request.state, "caller", None)
    if known is not None:
        return known
    _hit_ip(request, state)
    token = _token(request)
    principal, fingerprint = principal_of(request, state, token)
    cache: dict[str, Principal] = request.app.state.veil_tokens
    access = state.access(principal)
    request.state.actor = principal.name
    request.state.key_id = principal.key_id
    try:
        access.policy()  # a key revoked or expired since it was cached is refused here
    except PermissionDeniedError as exc:
        cache.pop(fingerprint, None)
        state.forget(principal)
        raise _unauthenticated(exc) from None
    return _caller(request, principal, access)


def cached_caller(request: Request, state: ServeState) -> Caller | None:
    """The request's :class:`Caller` if this worker's memory alone can say, else ``None``.

    For a route that runs on the event loop: a token verified before, grants read
    less than ``Access.max_age`` ago, limits kept in memory. Anything else (a new
    token's scrypt, a database read, a refusal to record, Redis) is
    :func:`authenticate`'s, in a thread. Nothing is counted or recorded when this
    returns ``None``, so the thread's :func:`authenticate` starts afresh.
    """
    known: Caller | None = getattr(request.state, "caller", None)
    if known is not None:
        return known
    if state.limits.backend != "memory":
        return None
    try:
        token = _token(request)
    except UnauthenticatedError:
        return None  # authenticate refuses it, after the per-address limit
    principal = request.app.state.veil_tokens.get(_fingerprint(token))
    if principal is None:
        return None
    access = state.access(principal)
    if access.cached_policy() is None:
        return None
    _hit_ip(request, state)
    request.state.actor = principal.name
    request.state.key_id = principal.key_id
    return _caller(request, principal, access)


def _hit_ip(request: Request, state: ServeState) -> None:
    client = request.client.host if request.client else "unknown"
    request.state.pre_auth = True  # a refusal here is a flood: see veil.serve._app._Flood
    state.limits.hit_ip(client)
    request.state.pre_auth = False


def _caller(request: Request, principal: Principal, access: Access) -> Caller:
    caller = Caller(principal=principal, access=access, key_id=principal.key_id or "")
    request.state.caller = caller
    return caller


def principal_of(request: Request, state: ServeState, token: str) -> tuple[Principal, str]:
    """The principal ``token`` stands for and the token's fingerprint (a 401 if refused).

    A token this worker has verified before is served from memory; a new one is
    checked once (scrypt, in one of the worker's verify slots). The console's
    sign-in checks the key it is given through this same path.
    """
    fingerprint = _fingerprint(token)
    cache: dict[str, Principal] = request.app.state.veil_tokens
    principal = cache.get(fingerprint)
    if principal is None:
        principal = _verify(request, state, token, fingerprint)
        cache[fingerprint] = principal
    return principal, fingerprint


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def forget_key(request: Request, state: ServeState, principal: Principal) -> None:
    """Drop what this worker remembers of ``principal``'s key (its verified tokens, its Access).

    For a key this worker has just revoked (the monitor's ``suspend``): its next request
    is checked against the database at once, instead of after ``Access.max_age``.
    """
    cache: dict[str, Principal] = request.app.state.veil_tokens
    for fingerprint, known in list(cache.items()):
        if known.key_id == principal.key_id:
            cache.pop(fingerprint, None)
    state.forget(principal)


def _verify(request: Request, state: ServeState, token: str, fingerprint: str) -> Principal:
    """Check a token this worker has not verified yet, in one of ``state.verify_slots``.

    The check is a scrypt hash (~65 ms of CPU) that a made-up secret for a real
    key id costs as much as a real one; unbounded, one address at the per-address
    limit could keep many cores hashing. Requests carrying the same token while
    it is being checked wait for that one check (a client's first burst costs one
    hash). Otherwise, with every slot busy the request is refused at once (429),
    without waiting: waiting would tie up the thread pool that keys already
    verified are served from.
    """
    with state._lock:  # noqa: SLF001 - the state's own lock, for its own table
        pending = state.verifying.get(fingerprint)
        leader = pending is None
        if pending is None:
            pending = state.verifying[fingerprint] = Future()
    try:
        if not leader:
            return pending.result(timeout=_FOLLOW_SECONDS)
        try:
            principal = _check(state, token)
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        else:
            pending.set_result(principal)
            return principal
    except PermissionDeniedError as exc:
        parsed = parse_key(token)  # the id the token names (known or not); never the secret
        request.state.actor = f"key:{parsed[0] if parsed else 'unknown'}"
        request.state.key_id = parsed[0] if parsed else None
        raise _unauthenticated(exc) from None
    except (RateLimitedError, FutureTimeout):
        raise _busy() from None
    finally:
        if leader:
            with state._lock:  # noqa: SLF001
                state.verifying.pop(fingerprint, None)


def _check(state: ServeState, token: str) -> Principal:
    if not state.verify_slots.acquire(blocking=False):
        raise _busy()
    try:
        return state.operator.authenticate(token)
    finally:
        state.verify_slots.release()


def _busy() -> RateLimitedError:
    return RateLimitedError(
        "too many first-time key checks are running in this worker",
        expected=f"at most {VERIFY_SLOTS} at once",
        got="every slot busy",
        fix="retry after the Retry-After header; a key is checked once per worker, "
        "then served from memory",
        details={"retry_after": 1.0, "bucket": "key-checks"},
    )


def needs(
    permission: Permission, *, dataset_param: str | None = None, any_dataset: bool = False
) -> Any:
    """A dependency that authenticates the caller and checks ``permission`` (see the module).

    ``any_dataset``: a listing route, where holding ``permission`` on one dataset
    is enough to ask (the route shows only what each grant allows).
    """

    def dependency(request: Request, state: Annotated[ServeState, Depends(get_state)]) -> Caller:
        caller = authenticate(request, state)
        dataset = None if dataset_param is None else request.path_params.get(dataset_param)
        if any_dataset and dataset is None and _held_anywhere(caller.access, permission):
            return caller
        caller.access.require(permission, dataset, action=f"serve:{permission.value}")
        return caller

    dependency.veil_permission = permission  # type: ignore[attr-defined]
    dependency.veil_dataset_param = dataset_param  # type: ignore[attr-defined]
    return Depends(dependency)


def _held_anywhere(access: Access, permission: Permission) -> bool:
    return any(permission in ROLE_PERMISSIONS[role] for role, _ in access.policy().grants)


def permission_extra(permission: Permission) -> dict[str, Any]:
    """``openapi_extra`` naming the permission a route needs (and the roles that hold it)."""
    roles = sorted(str(r) for r, held in ROLE_PERMISSIONS.items() if permission in held)
    return {"x-veil-permission": permission.value, "x-veil-roles": roles}
