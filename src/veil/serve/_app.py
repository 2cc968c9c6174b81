"""The application: :func:`create_app` builds the FastAPI gateway of one worker.

What every request goes through, outermost first (:class:`_Gateway`, a plain
ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs about a millisecond
a request, a third of the gateway's budget):

1. a request id (``X-Request-Id`` on the answer, ``request_id`` in the trail
   entry, the log line and any error body);
2. the body read whole up to its limit (``max_body_bytes``; encrypted-inference
   uploads ``max_he_bytes``) and refused with 413 past it, before any route
   code runs, whether or not the client declared a length;
3. the route: its ``needs(...)`` dependency authenticates and checks the
   permission (``veil.serve._auth``), then the handler calls the library
   through the same role checks and budget gate as the CLI;
4. before the first byte of the answer leaves, one ``serve.request`` trail
   entry through the spool (``veil.serve._spool``): if it cannot be written,
   the answer is replaced by a 503, so nothing is answered unrecorded;
5. one JSON log line.

``/healthz`` and ``/readyz`` skip steps 4-5 (see ``veil.serve._ops``).

Start-up (the lifespan) opens the workspace's store without upgrading it,
the operator's :class:`~veil.access.Access` (the account that started the
service: system records such as alerts), the spool, the limits, the policy,
the models and the monitor. Shutdown marks the worker not ready, lets uvicorn
drain in-flight requests (``--shutdown-grace``), then flushes the spool into
the trail and closes the store: a graceful stop loses no entry and no charge
(charges commit inside their request).
"""

from __future__ import annotations

import gc
import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from veil import __version__
from veil.access import Access
from veil.errors import DataTooLargeError
from veil.serve._config import ServeConfig
from veil.serve._errors import install_handlers
from veil.serve._ops import UNTRACED
from veil.serve._state import ServeState

__all__ = ["configure_logging", "create_app", "create_app_from_env", "routers"]

log = logging.getLogger("veil.serve")
_HE_PREFIX = "/v1/he/"
_CONSOLE = "/console"
_CONSOLE_STATIC = "/console/static/"


def configure_logging(level: str = "info") -> None:
    """JSON lines on standard error for the ``veil.serve`` logger (once per process)."""
    if any(getattr(h, "veil_json", False) for h in log.handlers):
        return
    from pythonjsonlogger.json import JsonFormatter  # noqa: PLC0415 - veil[serve]

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.veil_json = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False


# ------------------------------------------------------------------ the middleware
def _outcome(status: int) -> str:
    if status < HTTPStatus.BAD_REQUEST:
        return "allowed"
    return "refused" if status < HTTPStatus.INTERNAL_SERVER_ERROR else "failed"


class _Gateway:
    """Request id, body limit, the trail entry before the answer, the log line (see module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: ServeState = scope["app"].state.veil
        path: str = scope["path"]
        request_id = secrets.token_hex(8)
        scope_state = scope.setdefault("state", {})
        scope_state["request_id"] = request_id
        traced = path not in UNTRACED and not path.startswith(_CONSOLE_STATIC)
        console = path == _CONSOLE or path.startswith(_CONSOLE + "/")
        config = state.config
        limit = _body_limit(config, path)
        body, too_large = await _read_body(scope, receive, limit)
        replaced = False

        async def replay() -> Message:
            nonlocal body
            chunk, body = body, b""
            return {"type": "http.request", "body": chunk, "more_body": False}

        async def traced_send(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = _headers(message.get("headers", []), request_id, started, console)
                message = {**message, "headers": headers}
                if traced:
                    try:
                        _record(state, scope, status, started)
                    except Exception:  # the answer must not leave unrecorded
                        log.exception("trail spool write failed", extra={"request_id": request_id})
                        replaced = True
                        await _send_json(send, 503, _unrecorded(request_id), request_id)
                        return
                    _log(state, scope, status, started)
            await send(message)

        if too_large:
            await _refuse_too_large(scope, traced_send, request_id, limit)
            return
        refused = state.spool.refusal() if traced else None
        if refused is not None:  # refuse before the route runs (and charges), not after
            scope_state["error_code"] = refused.code
            log.warning(
                "refused: %s", refused, extra={"request_id": request_id, "code": refused.code}
            )
            answer = {  # the cause (a database error naming its address) is the operator's
                "error": {
                    "code": refused.code,
                    "message": refused.message,
                    "expected": refused.expected,
                    "got": "entries waiting for the trail's database",
                    "fix": "retry shortly; the operator's log names the cause",
                    "details": {},
                    "request_id": request_id,
                }
            }
            await _send_json(send, 503, answer, request_id)
            return
        await self.app(scope, replay, traced_send)


def _headers(
    headers: list[tuple[bytes, bytes]], request_id: str, started: float, console: bool
) -> list[tuple[bytes, bytes]]:
    """The answer's headers plus the request id, ``Server-Timing`` (time to the first byte)
    and, on the console's paths, its security headers (less any the route set itself)."""
    elapsed = (time.perf_counter() - started) * 1000
    out = [
        *headers,
        (b"x-request-id", request_id.encode()),
        (b"server-timing", f"app;dur={elapsed:.2f}".encode()),
    ]
    if console:
        from veil.serve.console._render import SECURITY_HEADERS  # noqa: PLC0415

        present = {name.lower() for name, _ in headers}
        out.extend((name, value) for name, value in SECURITY_HEADERS if name not in present)
    return out


def _body_limit(config: ServeConfig, path: str) -> int:
    """JSON bodies ``max_body_bytes``; encrypted uploads their own (requests less than contexts)."""
    if not path.startswith(_HE_PREFIX):
        return config.max_body_bytes
    if path.endswith("/infer"):
        return min(config.max_he_bytes, config.max_he_request_bytes)
    return config.max_he_bytes


async def _read_body(scope: Scope, receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The whole body, or (b"", True) as soon as it passes ``limit`` (declared or counted)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                if int(value) > limit:
                    return b"", True
            except ValueError:
                return b"", True
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


async def _refuse_too_large(scope: Scope, send: Send, request_id: str, limit: int) -> None:
    scope["state"]["error_code"] = DataTooLargeError.code
    path: str = scope["path"]
    if path == _CONSOLE or path.startswith(_CONSOLE + "/"):  # a person at a form: a page
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>413 · Veil console</title>"
            '<link rel="stylesheet" href="/console/static/console.css"></head><body>'
            '<main id="main"><h1>413: the form is too large</h1>'
            '<div class="notice notice-error" role="alert"><dl class="facts">'
            f"<dt>Expected</dt><dd>at most {limit:,} bytes</dd><dt>Got</dt><dd>more</dd>"
            "<dt>Fix</dt><dd>shorten what you typed (the SQL, a reason) and submit again</dd>"
            f"<dt>Request</dt><dd><code>{request_id}</code></dd></dl></div>"
            '<p><a href="/console">Back to the console</a></p></main></body></html>'
        ).encode()
        await _send(send, 413, page, b"text/html; charset=utf-8", request_id)
        return
    error = {
        "error": {
            "code": DataTooLargeError.code,
            "message": "the request body is too large",
            "expected": f"at most {limit:,} bytes",
            "got": "more",
            "fix": "send fewer records per request (or smaller encrypted batches)",
            "details": {"limit": limit},
            "request_id": request_id,
        }
    }
    await _send_json(send, 413, error, request_id)


def _unrecorded(request_id: str) -> dict[str, Any]:
    return {
        "error": {
            "code": "unavailable",
            "message": "the request could not be recorded on the trail, so it was not answered",
            "expected": "a writable trail spool",
            "got": "a failed write",
            "fix": "retry later; the operator's log names the cause",
            "details": {},
            "request_id": request_id,
        }
    }


async def _send_json(send: Send, status: int, body: dict[str, Any], request_id: str) -> None:
    await _send(send, status, json.dumps(body).encode(), b"application/json", request_id)


async def _send(send: Send, status: int, raw: bytes, media: bytes, request_id: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media),
                (b"content-length", str(len(raw)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw, "more_body": False})


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", "")) or "(no route)"


class Flood:
    """Refusals by the per-address limit, recorded as one entry per address per ``every`` seconds.

    Those requests come before any key is read, from whoever can reach the
    port: recording each one would let an outsider grow the trail as fast as
    it can send. The first refusal from an address is an entry of its own, as
    is the first after each ``every`` seconds; it carries ``flood_refusals``,
    the number of refusals from that address it stands for (itself and those
    not recorded since the last). :meth:`drain` records what is left at
    shutdown, so the trail counts every request.
    """

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def count(self, address: str) -> int:
        """Count one refusal; the number to record now (0: not yet, it is counted)."""
        now = time.monotonic()
        with self._lock:
            total = self._counts.get(address, 0) + 1
            if now - self._last.get(address, -self.every) < self.every:
                self._counts[address] = total
                return 0
            self._counts[address] = 0
            self._last[address] = now
            return total

    def drain(self) -> dict[str, int]:
        """The refusals counted but not yet recorded, per address (and forget them)."""
        with self._lock:
            left = {a: n for a, n in self._counts.items() if n}
            self._counts.clear()
            return left


def _record(state: ServeState, scope: Scope, status: int, started: float) -> None:
    noted = scope["state"]
    if noted.get("pre_auth") and noted.get("error_code") == "rate_limited":
        client = scope.get("client")
        address = client[0] if client else "unknown"
        standing_for = state.flood.count(address)
        if not standing_for:
            return
        noted["trail_details"] = {"flood_refusals": standing_for, "client": address}
    key_id = noted.get("key_id")
    details: dict[str, Any] = {
        "method": scope["method"],
        "route": _route(scope),
        "status": status,
        "code": noted.get("error_code"),
        "request_id": noted["request_id"],
        "key_id": key_id,
        "ms": round((time.perf_counter() - started) * 1000, 3),
    }
    details.update(noted.get("trail_details") or {})
    entry = {
        "actor": noted.get("actor") or "anonymous",
        "action": "serve.request",
        "outcome": _outcome(status),
        "purpose": noted.get("trail_purpose") or "",
        "dataset": noted.get("trail_dataset"),
        "details": details,
    }
    usage = noted.get("usage")
    counted = None
    if usage is not None and status < HTTPStatus.BAD_REQUEST and key_id:
        counted = (str(key_id), str(usage[0]), int(usage[1]))
    state.spool.record(entry, usage=counted)


def _log(state: ServeState, scope: Scope, status: int, started: float) -> None:
    if not state.log.isEnabledFor(logging.INFO):
        return
    noted = scope["state"]
    client = scope.get("client")
    state.log.info(
        "request",
        extra={
            "request_id": noted["request_id"],
            "method": scope["method"],
            "route": _route(scope),
            "status": status,
            "code": noted.get("error_code"),
            "actor": noted.get("actor"),
            "key_id": noted.get("key_id"),
            "client": client[0] if client else None,
            "ms": round((time.perf_counter() - started) * 1000, 3),
        },
    )


# ------------------------------------------------------------------ building
def _build_state(config: ServeConfig) -> ServeState:
    """Open everything a worker needs (the lifespan's start)."""
    from veil.serve._alerts import AlertSink  # noqa: PLC0415 - the parts, in the order they need
    from veil.serve._limits import Limits  # noqa: PLC0415
    from veil.serve._monitor import Monitor  # noqa: PLC0415
    from veil.serve._policy import ServePolicy  # noqa: PLC0415
    from veil.serve._served import ModelCache  # noqa: PLC0415
    from veil.serve._spool import TrailSpool  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.vault import KeyStore  # noqa: PLC0415
    from veil.workspace import Workspace  # noqa: PLC0415

    workspace = Workspace(config.home)
    config.check(workspace.settings)
    policy = ServePolicy.load(config.policy_path())
    store = Store.for_workspace(workspace, pooled=True)  # a long-lived process: see Store.open
    keys = KeyStore.for_workspace(workspace)
    signing_key = keys.get("trail")
    operator = Access(store, settings=workspace.settings, signing_key=signing_key)
    spool = TrailSpool(
        store,
        operator.trail,
        workspace.home / "serve" / "spool",
        flush_interval=config.flush_interval,
    )
    limits = Limits.open(config.redis_url, store, ip_rate=config.ip_rate)
    alerts = AlertSink(operator, log, limits, getattr(policy, "webhook", None))
    models = ModelCache(workspace, operator, torch_threads=_TORCH_THREADS["worker"])
    models.check_private(policy)  # a policy asking private labels of a non-SISA model: no start
    models.prepare()  # PyTorch now if there are models to serve, never otherwise
    state = ServeState(
        config=config,
        workspace=workspace,
        store=store,
        signing_key=signing_key,
        ledger_key=keys.get("ledger"),
        operator=operator,
        spool=spool,
        limits=limits,
        policy=policy,
        models=models,
        monitor=Monitor(alerts),
        log=log,
    )
    state.flood = Flood()
    spool.start()
    return state


def _freeze_startup_objects() -> None:
    """Keep what start-up built (modules, models, the store) out of later garbage collections.

    A worker holds pandas, SciPy and, once a model is served, torch: hundreds of thousands of
    long-lived objects that every full collection would walk again, a pause of
    milliseconds in whichever request triggers it. ``gc.freeze`` moves them to
    a generation the collector skips (the usual remedy for pre-loaded servers).
    """
    gc.collect()
    gc.freeze()


def _close_state(state: ServeState) -> None:
    state.ready = False
    for address, refused in state.flood.drain().items():
        state.spool.record(
            {
                "actor": "anonymous",
                "action": "serve.request",
                "outcome": "refused",
                "details": {"code": "rate_limited", "client": address, "flood_refusals": refused},
            }
        )
    for part in (state.monitor, state.spool, state.limits):
        close = getattr(part, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.exception("closing %s failed", type(part).__name__)
    state.store.dispose()


def routers() -> list[APIRouter]:
    """The gateway's routers, operations first."""
    from veil.serve import (  # noqa: PLC0415
        _access_routes,
        _he_routes,
        _model_routes,
        _ops,
        _query_routes,
        _trail_routes,
    )

    return [
        m.router
        for m in (_ops, _query_routes, _model_routes, _he_routes, _access_routes, _trail_routes)
    ]


def _declare_permissions(router: APIRouter) -> None:
    """Put each route's permission into its OpenAPI operation (``x-veil-permission``)."""
    from veil.access import ROLE_PERMISSIONS  # noqa: PLC0415

    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        for dependency in route.dependant.dependencies:
            permission = getattr(dependency.call, "veil_permission", None)
            if permission is not None:
                roles = sorted(str(r) for r, held in ROLE_PERMISSIONS.items() if permission in held)
                extra = dict(route.openapi_extra or {})
                extra.update({"x-veil-permission": permission.value, "x-veil-roles": roles})
                route.openapi_extra = extra


def create_app(config: ServeConfig, *, state: ServeState | None = None) -> FastAPI:
    """The gateway for ``config`` (its parts open when the app starts, in each worker).

    ``state``: parts already open (tests that build their own); the app then
    neither opens nor closes them.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = state is None
        app.state.veil = _build_state(config) if state is None else state
        app.state.veil_tokens = {}
        app.state.veil_console_keys = {}
        if owned:
            from veil.serve.console import warm  # noqa: PLC0415

            warm(app.state.veil)
            _freeze_startup_objects()
        app.state.veil.log.info("started", extra={"version": __version__, "port": config.port})
        try:
            yield
        finally:
            app.state.veil.log.info("stopping")
            if owned:
                _close_state(app.state.veil)

    app = FastAPI(
        title="Veil gateway",
        version=__version__,
        description=(
            "DP analytics, protected and encrypted inference for Veil workspaces. Every "
            "/v1 operation needs a bearer service key (`veil keys create`) whose role holds "
            "the operation's `x-veil-permission`; every request is on the workspace's trail."
        ),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    install_handlers(app)
    for router in routers():
        _declare_permissions(router)
        app.include_router(router)
    from veil.serve import console  # noqa: PLC0415 - Jinja2 loads on the first page

    console.install(app)
    app.add_middleware(_Gateway)
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn's factory in each worker process: the configuration from ``VEIL_SERVE_CONFIG``."""
    config = ServeConfig.from_env()
    configure_logging(config.extra.get("log_level", "info"))
    _one_thread_per_request()
    return create_app(config)


# torch's intra-op threads in this process: 1 in a uvicorn worker, left alone elsewhere (tests
# and embedding applications that build the app in their own process).
_TORCH_THREADS: dict[str, int | None] = {"worker": None}


def _one_thread_per_request() -> None:
    """BLAS and torch on one thread in a worker: requests run side by side in the thread pool.

    A small matrix product took 15-20 ms with OpenBLAS's two threads on this
    2-core machine under load, against 0.7 ms on one (measured by the monitor's
    calibration): with several requests in flight, threads inside each one only
    fight each other.
    """
    from threadpoolctl import (  # type: ignore[import-untyped]  # noqa: PLC0415 - sklearn's
        threadpool_limits,
    )

    threadpool_limits(1)
    # PyTorch is imported by the model cache (at start-up when the workspace holds a model),
    # which then sets its threads.
    _TORCH_THREADS["worker"] = 1
