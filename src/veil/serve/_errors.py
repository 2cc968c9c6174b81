"""Errors as HTTP: one body shape, one status per Veil error code, and no 500 for bad input.

Every refusal the service returns is ``{"error": {...}}`` with the error's
stable ``code`` (``docs/errors.md``), its message in three parts (expected,
got, fix), machine-readable details and the request's id, so a client can
branch on the code and a person can quote the id to an operator, who finds the
request's trail entry by it. Request validation (FastAPI's 422) takes the same
shape with the code ``invalid_input``. An unexpected exception is a 500 with
the code ``internal`` and no message from the exception (it could quote data).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from veil.errors import VeilError

__all__ = [
    "ERROR_RESPONSES",
    "STATUS_OF",
    "ErrorBody",
    "ErrorInfo",
    "error_response",
    "install_handlers",
    "status_of",
]

log = logging.getLogger("veil.serve")

STATUS_OF: dict[str, int] = {
    "invalid_input": 400,
    "schema_error": 400,
    "data_too_large": 413,
    "not_found": 404,
    "conflict": 409,
    "budget_exceeded": 403,
    "permission_denied": 403,
    "unauthenticated": 401,
    "rate_limited": 429,
    "unavailable": 503,
    "store_error": 503,
    "store_version": 503,
    "missing_dependency": 501,
    "unsupported_media_type": 415,
}
# Starlette's own HTTP errors (no route, wrong method, ...), named as Veil codes.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "data_too_large"}


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable error code (docs/errors.md).")
    message: str
    expected: str | None = None
    got: str | None = None
    fix: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = Field(None, description="Names this request's trail entry.")


class ErrorBody(BaseModel):
    error: ErrorInfo


_DESCRIPTIONS = {
    400: "Bad input (invalid_input, schema_error)",
    401: "No valid service key (unauthenticated)",
    403: "The key lacks the role, or the budget is spent (permission_denied, budget_exceeded)",
    404: "No such dataset, model or route (not_found)",
    413: "The body is too large (data_too_large)",
    415: "Wrong content type (unsupported_media_type)",
    422: "The body does not match the schema (invalid_input)",
    429: "Rate limit (rate_limited; Retry-After)",
    503: "The database or Redis is down: refused rather than unaccounted (unavailable)",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _DESCRIPTIONS.items()
}


def status_of(error: VeilError) -> int:
    """The HTTP status of a Veil error (500 for a code the table lacks: a bug to fix)."""
    return STATUS_OF.get(error.code, 500)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


# The console (``veil.serve.console``) renders refusals on its own paths as HTML pages;
# it installs its renderer here so that one table of codes and statuses serves both.
HtmlErrors = Callable[[Request, int, dict[str, Any], dict[str, str] | None], Response]
html_errors: dict[str, HtmlErrors] = {}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    expected: str | None = None,
    got: str | None = None,
    fix: str | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A refusal in the one shape, with the code noted for the request's trail entry."""
    request.state.error_code = code
    body = {
        "error": {
            "code": code,
            "message": message,
            "expected": expected,
            "got": got,
            "fix": fix,
            "details": details or {},
            "request_id": _request_id(request),
        }
    }
    for prefix, render in html_errors.items():
        if request.url.path == prefix or request.url.path.startswith(prefix + "/"):
            return render(request, status, body["error"], headers)
    return JSONResponse(body, status_code=status, headers=headers)


# The database's own errors name its address, user and database, and quote the driver:
# the operator's business, not any caller's (an outage reaches unauthenticated callers too).
_INFRASTRUCTURE = frozenset({"store_error", "store_version"})


def _veil_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, VeilError)  # noqa: S101 - registered for VeilError only
    status = status_of(exc)
    if status == HTTPStatus.INTERNAL_SERVER_ERROR:
        log.error("unmapped error code %s", exc.code, extra={"code": exc.code})
    if exc.code in _INFRASTRUCTURE:
        log.error(
            "database unavailable: %s (expected %s; got %s)",
            exc.message,
            exc.expected,
            exc.got,
            extra={"request_id": _request_id(request), "code": exc.code},
        )
        return error_response(
            request,
            status,
            exc.code,
            exc.message,
            expected="the service's database answering",
            got="it did not (the operator's log has the cause, under this request id)",
            fix="retry later",
        )
    headers = None
    retry = exc.details.get("retry_after") if exc.details else None
    if status == HTTPStatus.TOO_MANY_REQUESTS and retry is not None:
        headers = {"Retry-After": str(max(1, int(float(retry) + 0.999)))}
    if status == HTTPStatus.UNAUTHORIZED:
        headers = {"WWW-Authenticate": 'Bearer realm="veil"'}
    return error_response(
        request,
        status,
        exc.code,
        exc.message,
        expected=exc.expected,
        got=exc.got,
        fix=exc.fix,
        details=_jsonable(exc.details),
        headers=headers,
    )


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in details.items():
        if value is None or isinstance(value, bool | int | str):
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if math.isfinite(value) else str(value)
        elif isinstance(value, list | tuple):
            out[key] = [v if isinstance(v, bool | int | str) else str(v) for v in value]
        else:
            out[key] = str(value)
    return out


def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    problems = []
    for item in exc.errors()[:10]:
        where = ".".join(str(p) for p in item.get("loc", ()))
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return error_response(
        request,
        422,
        "invalid_input",
        "the request does not match the API's schema",
        expected="a body and parameters as the OpenAPI schema at /openapi.json describes",
        got="; ".join(problems) or "an invalid request",
        fix="correct the fields named above",
        details={"problems": problems},
    )


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    status = exc.status_code
    if status == HTTPStatus.BAD_REQUEST:  # FastAPI could not parse the body (e.g. nested too deep)
        return error_response(
            request,
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "invalid_input",
            "the request body is not JSON the API can read",
            expected="a well-formed JSON body, as the OpenAPI schema at /openapi.json describes",
            got=str(exc.detail),
            fix="send the body the operation's schema describes",
        )
    code = _HTTP_CODES.get(
        status, "invalid_input" if status < HTTPStatus.INTERNAL_SERVER_ERROR else "internal"
    )
    return error_response(
        request,
        status,
        code,
        str(exc.detail),
        expected="a route and method the OpenAPI schema at /openapi.json lists",
        got=f"{request.method} {request.url.path}",
        headers=dict(exc.headers or {}),
    )


def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error", extra={"request_id": _request_id(request)}, exc_info=exc)
    return error_response(
        request,
        500,
        "internal",
        "the service failed unexpectedly",
        fix="report the request id to the operator; the service's log has the traceback",
    )


def install_handlers(app: Any) -> None:
    app.add_exception_handler(VeilError, _veil_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
