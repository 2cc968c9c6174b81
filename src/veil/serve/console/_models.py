"""The console's model pages: the list, one model's card, audit report, policy, usage and alerts.

Every page calls what the JSON API calls, with the same permission, checked on
the model's training set as ``model_needs`` checks it for ``/v1``:

* ``GET /console/models``: :func:`veil.serve._model_routes.list_models`
  (``model.read`` on some dataset; the list shows the models whose training set
  the key may read), as ``GET /v1/models``.
* ``GET /console/models/{name}``: ``model.read``: the card and the policy for
  this key (``GET /v1/models/{name}``), the audit report's verdicts and ROC
  (``GET /v1/models/{name}/audit``); with ``model.predict``, this key's usage
  (``GET /v1/models/{name}/usage``); with ``trail.read`` (owners, auditors),
  every key's usage and policy (``GET /v1/models/{name}/usage/keys``) and the
  monitor's alerts, paged (``GET /v1/models/{name}/alerts``).
* ``GET /console/models/{name}/report``: the report's own HTML document
  (``GET /v1/models/{name}/audit/report``), shown in a sandboxed ``<iframe>``
  and answered under a CSP that lets nothing in it run or load.
* ``GET /console/models/{name}/live``: the usage and alert counts as JSON, for
  ``models.js`` to refresh the page's numbers every 10 seconds.

Nothing here reads a whole trail: alerts are one page of an indexed range read.
"""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from veil.access import Permission
from veil.serve._auth import Caller, annotate
from veil.serve._model_insight import (
    REPORT_JSON,
    SCAN,
    AuditSummary,
    audit_summary,
    key_usage,
    model_alerts,
)
from veil.serve._model_routes import ModelCall, ModelName, list_models, show_model, usage
from veil.serve._served import ServedModel
from veil.serve._state import ServeState, get_state
from veil.serve._watch_routes import model_report
from veil.serve.console._render import render
from veil.serve.console._session import console_needs

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

State = Annotated[ServeState, Depends(get_state)]
ALERTS_PER_PAGE = 20
ROC_SIZE = (360, 300)  # the SVG's drawing area, in its own units
ROC_MARGIN = (54, 12, 12, 36)  # left, top, right, bottom
ROC_TICKS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
CURVE_CLASSES = 6  # models.css colours curves roc-0 .. roc-5


def _model(state: ServeState, caller: Caller, name: str, permission: Permission) -> ModelCall:
    """``model_needs(permission)`` for a console caller: the model, checked on its training set."""
    model: ServedModel = state.models.get(name)
    caller.access.require(permission, model.dataset, action=f"console:{permission.value}")
    return ModelCall(caller, model)


# ---------------------------------------------------------------- the list
@router.get("/models")
def models_page(
    request: Request,
    caller: Annotated[Caller, console_needs(Permission.MODEL_READ, any_dataset=True)],
    state: State,
) -> HTMLResponse:
    """The models this key may read: training set, kind, epsilon, how each is served."""
    listed = list_models(caller=caller, state=state).models
    cards = {c.model: c for c in state.models.cards()}
    rows = []
    for m in listed:
        card = cards.get(m.name)
        sisa = bool(card is not None and card.sisa)
        output = state.policy.for_model(m.name, caller.key_id).output
        refused = output == "private_label" and not sisa
        rows.append(
            {
                "name": m.name,
                "dataset": m.dataset,
                "kind": m.architecture + (" (SISA ensemble)" if sisa else ""),
                "private": m.private,
                "epsilon": m.epsilon,
                "delta": None if card is None else card.delta,
                "output": output,
                "served": not refused,
                "audited": (state.models.registry.root / m.name / REPORT_JSON).is_file(),
            }
        )
    return render(
        request, "models/list.html", caller=caller, title="Models", nav="models", models=rows
    )


# ---------------------------------------------------------------- one model
@router.get("/models/{name}")
def model_page(
    request: Request,
    name: ModelName,
    caller: Annotated[Caller, console_needs(Permission.MODEL_READ, any_dataset=True)],
    state: State,
    before: Annotated[int | None, Query(ge=0, description="Alerts older than this seq.")] = None,
) -> HTMLResponse:
    """One model: card, audit report, policy, usage and the monitor's alerts."""
    call = _model(state, caller, name, Permission.MODEL_READ)
    detail = show_model(name=name, request=request, call=call, state=state)
    dataset = call.model.dataset
    mine = None
    if caller.access.allows(Permission.MODEL_PREDICT, dataset):
        mine = usage(name=name, request=request, call=call, state=state)
    watcher = caller.access.allows(Permission.TRAIL_READ, dataset)
    keys = alerts = None
    if watcher:
        keys = key_usage(state, name, dataset).keys
        alerts = model_alerts(state.store, name, before=before, limit=ALERTS_PER_PAGE)
    audit = audit_summary(state.models.registry.path(name), name)
    annotate(request, page="model", alerts_before=before)
    older = None
    if alerts is not None and alerts.next_before is not None:
        older = f"/console/models/{name}?{urlencode({'before': alerts.next_before})}#alerts"
    newer = f"/console/models/{name}#alerts" if before is not None else None
    return render(
        request,
        "models/detail.html",
        caller=caller,
        title=name,
        nav="models",
        name=name,
        dataset=dataset,
        card_lines=call.model.card.lines(),
        card=detail.card,
        classes=detail.classes,
        inputs=detail.inputs,
        policy=_policy_rows(detail.policy),
        monitor=_monitor_rows(state, caller, name),
        mine=mine,
        keys=keys,
        alerts=alerts,
        older=older,
        newer=newer,
        audit=None if audit is None else _audit_view(audit),
        watcher=watcher,
        scan=SCAN,
    )


@router.get("/models/{name}/report")
def report_page(
    request: Request,
    name: ModelName,
    caller: Annotated[Caller, console_needs(Permission.MODEL_READ, any_dataset=True)],
    state: State,
) -> HTMLResponse:
    """The audit report's own document, for the model page's sandboxed frame."""
    call = _model(state, caller, name, Permission.MODEL_READ)
    annotate(request, dataset=call.model.dataset, model=name, page="audit report")
    return model_report(state, name)


@router.get("/models/{name}/live")
def live(
    request: Request,
    name: ModelName,
    caller: Annotated[Caller, console_needs(Permission.MODEL_READ, any_dataset=True)],
    state: State,
) -> JSONResponse:
    """The page's changing numbers (usage by key, the newest alerts) for ``models.js``."""
    call = _model(state, caller, name, Permission.MODEL_READ)
    dataset = call.model.dataset
    annotate(request, dataset=dataset, model=name, page="live")
    out: dict[str, Any] = {"model": name}
    if caller.access.allows(Permission.MODEL_PREDICT, dataset):
        out["mine"] = usage(name=name, request=request, call=call, state=state).model_dump()
    if caller.access.allows(Permission.TRAIL_READ, dataset):
        out["keys"] = [
            {"key_id": k.key_id, "used": k.used, "left": k.left, "rate": k.rate}
            for k in key_usage(state, name, dataset).keys
        ]
        newest = model_alerts(state.store, name, limit=1).alerts
        out["newest_alert"] = newest[0].seq if newest else None
    return JSONResponse(out, headers={"cache-control": "no-store"})


# ---------------------------------------------------------------- views
def _policy_rows(policy: dict[str, Any]) -> list[tuple[str, str]]:
    """The policy for this key, as (what, value) rows for people."""
    output = policy["output"]
    say = {
        "label": "the most likely class only",
        "top_k": f"the {policy.get('top_k')} most likely classes with their probabilities",
        "probabilities": "every class's probability",
        "private_label": "a differentially private label (each answer charged on the ledger)",
    }
    rows = [("answers", f"{output}: {say.get(output, output)}")]
    if "decimals" in policy:
        decimals = policy.get("decimals")
        noise = policy.get("noise")
        rows += [
            ("rounding", "none" if decimals is None else f"{decimals} decimals"),
            ("temperature", f"{policy.get('temperature')}"),
            ("noise", "none" if not noise else f"{noise['kind']}, scale {noise['scale']}"),
        ]
    if output == "private_label":
        rows.append(("epsilon per answer", f"{policy.get('epsilon')}"))
        per_key = policy.get("epsilon_per_key")
        rows.append(("epsilon per key", "no bound" if per_key is None else f"{per_key:g}"))
    cap = policy.get("queries_per_key")
    rows += [
        ("records per key", "no cap" if cap is None else f"{cap:,}"),
        ("rate", str(policy.get("rate"))),
        ("largest request", f"{policy.get('max_batch')} records"),
    ]
    return rows


def _monitor_rows(state: ServeState, caller: Caller, name: str) -> list[tuple[str, str]]:
    watch = state.policy.for_model(name, caller.key_id).monitor
    if not watch.enabled:
        return [("monitor", "off")]
    action = {
        "alert": "record an alert",
        "throttle": f"throttle the key to {watch.throttle_rate} for {watch.throttle_seconds:g} s",
        "suspend": "suspend (revoke) the key",
    }.get(watch.action, watch.action)
    signals = []
    if watch.extraction:
        signals.append(
            f"extraction (dependence >= {watch.dependence_threshold:g}, "
            f"PRADA W < {watch.prada_delta:g} after {watch.prada_min_queries} queries)"
        )
    if watch.probing:
        signals.append(
            f"probing ({watch.probing_count} near-duplicates in {watch.probing_window} queries)"
        )
    return [
        ("signals", "; ".join(signals) or "none"),
        ("on an alert", action),
        ("webhook", "set" if watch.webhook else "none"),
    ]


def _audit_view(audit: AuditSummary) -> dict[str, Any]:
    report = audit.report
    membership = []
    found = report.get("membership")
    for r in found if isinstance(found, list) else []:
        if not isinstance(r, dict):
            continue
        bound = _mapping(r.get("epsilon_lower_bound"))
        ci = r.get("auc_ci95") if isinstance(r.get("auc_ci95"), list) else [None, None]
        membership.append(
            {
                "attack": str(r.get("attack")),
                "mode": _mapping(r.get("settings")).get("mode"),
                "auc": _float(r.get("auc")),
                "auc_ci": [_float(ci[0]), _float(ci[-1])] if ci else None,
                "advantage": _float(r.get("advantage")),
                "epsilon": _float(bound.get("shown", bound.get("epsilon"))),
            }
        )
    claimed = report.get("claimed") if isinstance(report.get("claimed"), dict) else None
    verdicts = [
        {k: str(v.get(k) or "") for k in ("attack", "level", "headline", "explanation")}
        for v in audit.verdicts
        if isinstance(v, dict)
    ]
    return {
        "written": audit.written,
        "claimed": None
        if claimed is None
        else {
            "private": bool(claimed.get("private")),
            "epsilon": _float(claimed.get("epsilon")),
            "delta": f"{_float(claimed.get('delta')) or 0:g}",
        },
        "verdicts": verdicts,
        "membership": membership,
        "roc": _roc_svg(audit.curves),
        "notes": _notes(report.get("notes")),
        "has_html": audit.has_html,
    }


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if the report holds an object there, else an empty one (a hand-edited file)."""
    return value if isinstance(value, dict) else {}


def _notes(value: Any) -> list[str]:
    """The report's notes: a list of texts, or one text (never split into its letters)."""
    if value is None or value == "":
        return []
    return [str(n) for n in value] if isinstance(value, list) else [str(value)]


def _float(value: Any) -> float | None:
    """A finite number from the report's JSON (``"inf"``, null, text: None, shown as a dash)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _roc_svg(curves: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The membership ROC curves on log-log axes, as SVG points (drawn by the template)."""
    if not curves:
        return None
    width, height = ROC_SIZE
    left, top, right, bottom = ROC_MARGIN
    positive = [v for c in curves for v in (*c["fpr"], *c["tpr"]) if v > 0]
    floor = max(min(positive, default=1e-3), 1e-6) / 2
    span = -math.log10(floor)

    def x(v: float) -> float:
        return left + (width - left - right) * (1 + math.log10(max(v, floor)) / span)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (-math.log10(max(v, floor)) / span)

    lines = []
    for i, c in enumerate(curves):
        points = " ".join(
            f"{x(f):.1f},{y(t):.1f}" for f, t in zip(c["fpr"], c["tpr"], strict=False)
        )
        lines.append(
            {
                "attack": c["attack"],
                "auc": c["auc"],
                "points": points,
                "cls": f"roc-{i % CURVE_CLASSES}",
            }
        )
    ticks = [
        {"label": f"{t:g}", "x": round(x(t), 1), "y": round(y(t), 1)}
        for t in ROC_TICKS
        if t >= floor
    ]
    return {
        "width": width,
        "height": height,
        "lines": lines,
        "chance": f"{x(floor):.1f},{y(floor):.1f} {x(1):.1f},{y(1):.1f}",
        "ticks": ticks,
        "box": {"x0": left, "y0": top, "x1": width - right, "y1": height - bottom},
    }
