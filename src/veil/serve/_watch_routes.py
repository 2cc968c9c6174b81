"""Watching a served model over HTTP: its monitor's alerts, every key's usage, its audit report.

``_model_routes`` calls :func:`add_watch_routes` with its router and its
``model_needs``, so these routes check the permission on the model's training
set exactly as the other model routes do:

| route | permission | what |
| --- | --- | --- |
| ``GET /v1/models/{name}/alerts`` | ``trail.read`` | the monitor's ``serve.alert`` entries, newest first, paged |
| ``GET /v1/models/{name}/usage/keys`` | ``trail.read`` | every key's records answered, count budget and policy |
| ``GET /v1/models/{name}/audit`` | ``model.read`` | the latest audit report's verdicts and measures |
| ``GET /v1/models/{name}/audit/report`` | ``model.read`` | the report's HTML document, under a CSP of its own |

Alerts and other keys' usage say what each key did; they come from the trail
(the alerts are its entries, the counts are written with its entries), so
they need what reading the trail needs. The console's model pages call the
same functions (:mod:`veil.serve._model_insight`).

No ``from __future__ import annotations`` here: the routes are defined inside
a function, and FastAPI reads their annotations, which name that function's
arguments.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from veil.access import Permission
from veil.errors import NotFoundError
from veil.serve._auth import annotate, permission_extra
from veil.serve._model_insight import (
    MAX_PAGE,
    REPORT_HTML,
    REPORT_JSON,
    AlertPage,
    AuditSummary,
    KeyUsageList,
    audit_html,
    audit_summary,
    key_usage,
    model_alerts,
    report_response,
)
from veil.serve._state import ServeState

__all__ = ["add_watch_routes", "model_audit", "model_report"]


def model_audit(state: ServeState, name: str) -> AuditSummary:
    """The model's audit report; a 404 that says how to make one when there is none."""
    found = audit_summary(state.models.registry.path(name), name)
    if found is None:
        raise NotFoundError(
            f"model '{name}' has no audit report yet",
            expected=f"{REPORT_JSON} in the model's folder",
            got="none",
            fix=f"run `veil audit --model {name} --test DATASET -o MODELS/{name}/{REPORT_HTML} "
            f"--json-out MODELS/{name}/{REPORT_JSON}` (MODELS: the workspace's models folder)",
        )
    return found


def model_report(state: ServeState, name: str) -> HTMLResponse:
    """The model's HTML audit report under its own CSP (:func:`report_response`), or a 404."""
    html = audit_html(state.models.registry.path(name))
    if html is None:
        raise NotFoundError(
            f"model '{name}' has no HTML audit report",
            expected=f"{REPORT_HTML} in the model's folder",
            got="none",
            fix=f"run `veil audit --model {name} --test DATASET -o MODELS/{name}/{REPORT_HTML}` "
            "(MODELS: the workspace's models folder)",
        )
    return report_response(html)


def add_watch_routes(
    router: APIRouter, model_needs: Callable[[Permission], Any], model_name: Any, state_type: Any
) -> None:
    """Add the routes of the module's table to ``router`` (``/v1/models``).

    Args:
        router: The model routes' router.
        model_needs: ``model_needs(permission)``: the caller and the path's model,
            the permission checked on its training set.
        model_name: The path parameter's annotated type (its pattern and length).
        state_type: The annotated :class:`ServeState` dependency.
    """
    read = model_needs(Permission.MODEL_READ)
    trail = model_needs(Permission.TRAIL_READ)

    @router.get(
        "/{name}/alerts",
        openapi_extra=permission_extra(Permission.TRAIL_READ),
        summary="The attack monitor's alerts on a model, newest first (from the trail)",
    )
    def alerts(  # noqa: PLR0917 - FastAPI passes parameters by name
        name: model_name,
        request: Request,
        call: Annotated[Any, trail],
        state: state_type,
        before: Annotated[int | None, Query(ge=0, description="Older than this seq.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> AlertPage:
        annotate(request, dataset=call.model.dataset, model=name)
        return model_alerts(state.store, name, before=before, limit=limit)

    @router.get(
        "/{name}/usage/keys",
        openapi_extra=permission_extra(Permission.TRAIL_READ),
        summary="Every key's records answered by a model, with its count budget and policy",
    )
    def usage_by_key(
        name: model_name, request: Request, call: Annotated[Any, trail], state: state_type
    ) -> KeyUsageList:
        annotate(request, dataset=call.model.dataset, model=name)
        return key_usage(state, name, call.model.dataset)

    @router.get(
        "/{name}/audit",
        openapi_extra=permission_extra(Permission.MODEL_READ),
        summary="The model's latest audit report (verdicts and measures; no per-example scores)",
    )
    def audit(
        name: model_name, request: Request, call: Annotated[Any, read], state: state_type
    ) -> dict[str, Any]:
        annotate(request, dataset=call.model.dataset, model=name)
        return model_audit(state, name).to_dict()

    @router.get(
        "/{name}/audit/report",
        response_model=None,
        # The report is HTML; refusals stay JSON errors, as on every route.
        responses={
            200: {
                "description": "The report's HTML document.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
        openapi_extra=permission_extra(Permission.MODEL_READ),
        summary="The model's latest audit report as its HTML document (a strict CSP, sandboxed)",
    )
    def audit_report(
        name: model_name, request: Request, call: Annotated[Any, read], state: state_type
    ) -> HTMLResponse:
        annotate(request, dataset=call.model.dataset, model=name)
        return model_report(state, name)
