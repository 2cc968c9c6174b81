"""Liveness and readiness: ``/healthz`` and ``/readyz`` (no key; not on the trail).

``/healthz`` says the process answers. ``/readyz`` says whether it should be
sent traffic: the database answers, Redis answers (when limits are shared),
and the trail spool is draining (its oldest waiting entry is younger than
``_MAX_LAG`` seconds). A load balancer polls both every few seconds, which is
why neither leaves a trail entry: they carry no key and touch no data.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from veil import __version__
from veil.serve._state import ServeState, get_state

__all__ = ["UNTRACED", "router"]

UNTRACED = frozenset({"/healthz", "/readyz"})
_MAX_LAG = 30.0

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up and answering."""
    return Health(status="ok", version=__version__)


def _check(name: str, checks: dict[str, str], probe: Any) -> bool:
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - a readiness probe reports, it does not raise
        checks[name] = f"down: {type(exc).__name__}"
        return False
    checks[name] = "ok"
    return True


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: see checks"}},
)
def readyz(state: Annotated[ServeState, Depends(get_state)]) -> Any:
    """Ready for traffic: database, Redis and the trail spool all well."""
    checks: dict[str, str] = {}

    def database() -> None:
        with state.store.session() as session:
            session.execute(text("select 1"))

    ok = _check("database", checks, database)
    ok = _check("limits", checks, state.limits.ping) and ok
    lag = float(getattr(state.spool, "lag_seconds", 0.0) or 0.0)
    failing = getattr(state.spool, "last_error", None)
    if failing:
        checks["trail_spool"] = "failing: the trail's database does not take entries"
        ok = False
    elif lag > _MAX_LAG:
        checks["trail_spool"] = f"behind: oldest waiting entry {lag:.0f} s old"
        ok = False
    else:
        checks["trail_spool"] = "ok"
    if not state.ready:
        checks["service"] = "shutting down"
        ok = False
    body = Readiness(ready=ok, checks=checks)
    checks["checked_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return body if ok else JSONResponse(body.model_dump(), status_code=503)
