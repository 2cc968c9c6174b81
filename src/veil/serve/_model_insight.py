"""What a model's watchers read: the monitor's alerts, every key's usage, the latest audit report.

Shared by the ``/v1/models/{name}/alerts``, ``/usage/keys`` and ``/audit`` routes
(``_model_routes``) and the console's model pages (``console._models``), so both
read the same rows through the same checks.

- **Alerts** are the ``serve.alert`` trail entries the monitor's sink writes
  (``_alerts``), newest first, paged by ``seq`` (``before``). The trail's
  columns carry the action but not the model, so the query walks the action's
  entries newest first on the ``(action, seq)`` index of migration 0008, at
  most 2,000 a page, and reads the bodies that name the model (its exact text
  in the canonical body, ``"model":"NAME"``: canonical JSON escapes every
  quote inside a string, so the pattern matches a ``model`` key only), then
  checks each parsed entry again. Nothing reads the whole trail.
- **Usage** of every key is the durable ``serve_usage`` count (written with the
  answers' trail entries by the spool's flush, so at most a flush, about 50 ms,
  behind), beside each key's effective policy (its count budget and rate).
- **The audit report** is the one kept with the model: ``audit-report.json``
  and ``audit-report.html`` in its folder (what ``veil unlearn`` writes, and
  where ``veil audit -o MODELS/NAME/audit-report.html --json-out
  MODELS/NAME/audit-report.json`` puts a full audit). The JSON is parsed once
  per worker and file version; per-example scores (which rows are members) are
  never passed on.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import case, select

from veil.access import ROLE_PERMISSIONS, Permission, Role, TrailEntry
from veil.errors import InvalidInputError
from veil.store.tables import ServeUsageRow, ServiceKeyRow, TrailEntryRow

__all__ = [
    "ALERT_ACTION",
    "REPORT_CSP",
    "REPORT_HTML",
    "REPORT_JSON",
    "AlertItem",
    "AlertPage",
    "AuditSummary",
    "KeyUsage",
    "KeyUsageList",
    "audit_html",
    "audit_summary",
    "key_usage",
    "model_alerts",
    "report_response",
]

ALERT_ACTION = "serve.alert"
REPORT_JSON = "audit-report.json"
REPORT_HTML = "audit-report.html"
MAX_PAGE = 200
MAX_KEYS = 500
REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'none'; "
    "base-uri 'none'; frame-ancestors 'self'; sandbox"
)
SCAN = 2000  # alert entries (of every model) one page reads at most
ROC_POINTS = 200  # points per curve passed on (the report keeps every threshold)


# ---------------------------------------------------------------- alerts
class AlertItem(BaseModel):
    """One alert of the attack monitor (a ``serve.alert`` trail entry)."""

    seq: int = Field(description="The trail entry's sequence number.")
    at: str
    outcome: str = Field(description="refused when the key was suspended, else allowed.")
    signal: str = Field(description="dependence, prada or probing.")
    statistic: float | None
    threshold: float | None
    direction: str | None = Field(description="below: alert when statistic < threshold.")
    queries: int | None = Field(description="Queries of this key to this model seen so far.")
    key_id: str | None
    principal: str | None
    action: str | None = Field(description="alert, throttle or suspend.")
    applied: bool | None = Field(description="Whether the action took effect.")


class AlertPage(BaseModel):
    model: str
    alerts: list[AlertItem] = Field(description="Newest first.")
    next_before: int | None = Field(
        description="Pass as ?before= for the next (older) page; null: no more."
    )


def check_page(before: int | None, limit: int) -> None:
    """Refuse a page that cannot be read (the /v1 route's Query bounds say the same)."""
    if before is not None and before < 0:
        raise InvalidInputError(
            "before must be a trail sequence number",
            expected="an integer >= 0",
            got=str(before),
            fix="pass next_before from the previous page, or leave it out for the newest",
        )
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(
            "an alert page holds 1 to 200 alerts",
            expected=f"1 <= limit <= {MAX_PAGE}",
            got=str(limit),
            fix="ask for at most 200 and page with before=",
        )


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _alert(entry: TrailEntry) -> AlertItem:
    d = entry.details
    queries = d.get("queries")
    return AlertItem(
        seq=entry.seq,
        at=entry.at,
        outcome=str(entry.outcome),
        signal=str(d.get("signal", "?")),
        statistic=_number(d.get("statistic")),
        threshold=_number(d.get("threshold")),
        direction=d.get("direction"),
        queries=queries if isinstance(queries, int) else None,
        key_id=d.get("key_id"),
        principal=d.get("principal"),
        action=d.get("action"),
        applied=d.get("applied") if isinstance(d.get("applied"), bool) else None,
    )


def model_alerts(
    store: Any, model: str, *, before: int | None = None, limit: int = 50, scan: int = SCAN
) -> AlertPage:
    """The monitor's alerts on ``model``, newest first: at most ``limit``, older than ``before``.

    One page reads at most ``scan`` alert entries (of every model) from the
    ``(action, seq)`` index, and the bodies of those that name ``model`` only:
    its time is bounded however many alerts other models have. A page may then
    hold fewer than ``limit`` alerts while older ones exist; ``next_before``
    says where to go on, and is None only when no alert is left.

    Raises:
        InvalidInputError: ``before`` < 0 or ``limit`` outside 1..200.
    """
    check_page(before, limit)
    pattern = "%" + _like(json.dumps({"model": model}, separators=(",", ":"))[1:-1]) + "%"
    named = TrailEntryRow.body.like(pattern, escape="\\")
    query = select(
        TrailEntryRow.seq,
        case((named, TrailEntryRow.body), else_=None),
        case((named, TrailEntryRow.leaf), else_=None),
    ).where(TrailEntryRow.action == ALERT_ACTION)
    if before is not None:
        query = query.where(TrailEntryRow.seq < before)
    query = query.order_by(TrailEntryRow.seq.desc()).limit(scan)
    with store.session() as session:
        rows = session.execute(query).all()
    alerts: list[AlertItem] = []
    next_before = rows[-1][0] if len(rows) == scan else None  # the window was full: go on
    for _seq, body, leaf in rows:
        if body is None:
            continue
        entry = TrailEntry.from_body(body, leaf)
        if entry.details.get("model") != model:  # LIKE ignores case on SQLite
            continue
        if len(alerts) == limit:  # one more exists: the next page starts after the last shown
            next_before = alerts[-1].seq
            break
        alerts.append(_alert(entry))
    return AlertPage(model=model, alerts=alerts, next_before=next_before)


# ---------------------------------------------------------------- usage by key
class KeyUsage(BaseModel):
    """One service key's use of a model, and the policy it is served under."""

    key_id: str
    principal: str | None = Field(description="The service the key stands for.")
    roles: list[str] = Field(description="role on scope, as the key may exercise them.")
    revoked: bool = Field(description="Revoked or expired: it can no longer call the model.")
    used: int = Field(description="Records answered (durable count, about 50 ms behind).")
    cap: int | None = Field(description="The key's count budget (null: no cap).")
    left: int | None
    output: str
    rate: str = Field(description="The key's prediction rate (its throttle while one lasts).")
    throttled: bool
    policy: dict[str, Any] = Field(description="The effective policy for this key.")


class KeyUsageList(BaseModel):
    model: str
    keys: list[KeyUsage] = Field(
        description="Keys that have used the model or may call it, most records first."
    )


def _may_predict(scopes: list[dict[str, Any]], dataset: str) -> bool:
    for scope in scopes:
        try:
            role = Role(str(scope.get("role")))
        except ValueError:
            continue
        if Permission.MODEL_PREDICT in ROLE_PERMISSIONS[role] and scope.get("scope") in (
            "*",
            dataset,
        ):
            return True
    return False


def key_usage(state: Any, model: str, dataset: str) -> KeyUsageList:
    """Every key that used ``model`` or may call it, with its count, budget and policy.

    Two small reads: the model's ``serve_usage`` rows (one per key that used it;
    the table holds keys x models, its key starts with the key id, so this is a
    scan of that table, not of the trail) and the keys table (at most 2,000
    keys); at most 500 keys are listed, and each key's policy comes from the
    policy's per-pair cache.
    """
    with state.store.session() as session:
        used = dict(
            session.execute(
                select(ServeUsageRow.key_id, ServeUsageRow.answered)
                .where(ServeUsageRow.model == model)
                .order_by(ServeUsageRow.answered.desc())
                .limit(MAX_KEYS)
            ).all()
        )
        keys = session.execute(
            select(
                ServiceKeyRow.key_id,
                ServiceKeyRow.principal,
                ServiceKeyRow.scopes,
                ServiceKeyRow.revoked_at,
                ServiceKeyRow.expires_at,
            ).limit(MAX_KEYS * 4)
        ).all()
    now = datetime.now(UTC)
    out: list[KeyUsage] = []
    known = set()
    for key_id, principal, scopes, revoked_at, expires_at in keys:
        known.add(key_id)
        active = revoked_at is None and (expires_at is None or expires_at > now)
        if key_id not in used and not (active and _may_predict(scopes or [], dataset)):
            continue
        out.append(
            _usage(
                state, model, key_id, used, principal=principal, scopes=scopes, revoked=not active
            )
        )
    out += [_usage(state, model, k, used, revoked=True) for k in used if k not in known]
    out.sort(key=lambda u: (-u.used, u.key_id))
    return KeyUsageList(model=model, keys=out[:MAX_KEYS])


def _usage(
    state: Any,
    model: str,
    key_id: str,
    used: dict[str, int],
    *,
    principal: str | None = None,
    scopes: list[dict[str, Any]] | None = None,
    revoked: bool,
) -> KeyUsage:
    policy = state.policy.for_model(model, key_id)
    count = int(used.get(key_id, 0))
    cap = policy.queries_per_key
    throttle = state.limits.throttled_rate(key_id)
    rate = state.limits.effective_rate(key_id, policy.rate)
    return KeyUsage(
        key_id=key_id,
        principal=principal,
        roles=sorted(f"{s.get('role')} on {s.get('scope')}" for s in scopes or []),
        revoked=revoked,
        used=count,
        cap=cap,
        left=None if cap is None else max(cap - count, 0),
        output=policy.output,
        rate=rate,
        throttled=throttle is not None and rate == throttle,
        policy=policy.to_dict(),
    )


# ---------------------------------------------------------------- the audit report
@dataclass(frozen=True)
class AuditSummary:
    """What the console and ``GET /v1/models/{name}/audit`` show of the model's audit report.

    ``report`` is the JSON twin without per-example scores; ``curves`` the
    membership ROC curves (at most 200 points each), ``has_html`` whether the
    HTML report is there to embed.
    """

    model: str
    written: str
    report: dict[str, Any]
    curves: list[dict[str, Any]]
    has_html: bool

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        verdicts = self.report.get("verdicts")
        return [v for v in verdicts if isinstance(v, dict)] if isinstance(verdicts, list) else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "written": self.written,
            "has_html": self.has_html,
            "report": self.report,
        }


_cache: dict[Path, tuple[tuple[int, int], AuditSummary]] = {}
_cache_lock = threading.Lock()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size)


def _thin(points: list[Any]) -> list[float]:
    if len(points) <= ROC_POINTS:
        return [float(p) for p in points]
    step = (len(points) - 1) / (ROC_POINTS - 1)
    return [float(points[round(i * step)]) for i in range(ROC_POINTS)]


def _results(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's membership results that are objects (a hand-edited file may hold anything)."""
    found = report.get("membership")
    return [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []


def _strip(report: dict[str, Any]) -> dict[str, Any]:
    """The report without per-example scores (they say which rows are members)."""
    out = dict(report)
    out["membership"] = [
        {k: v for k, v in r.items() if k not in ("per_example", "roc")} for r in _results(report)
    ]
    return out


def _rate(value: Any) -> float | None:
    """A point of a ROC curve: a finite number, held to [0, 1]; anything else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return min(max(number, 0.0), 1.0) if math.isfinite(number) else None


def _curves(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each attack's ROC curve, keeping only the points whose two rates are numbers."""
    curves = []
    for r in _results(report):
        roc = r.get("roc")
        if not isinstance(roc, dict):
            continue
        fpr, tpr = roc.get("fpr"), roc.get("tpr")
        if not isinstance(fpr, list) or not isinstance(tpr, list):
            continue
        pairs = [(_rate(f), _rate(t)) for f, t in zip(fpr, tpr, strict=False)]
        kept = [(f, t) for f, t in pairs if f is not None and t is not None]
        if not kept:
            continue
        auc = r.get("auc")
        curves.append(
            {
                "attack": str(r.get("attack")),
                "auc": auc if isinstance(auc, int | float) and math.isfinite(auc) else None,
                "fpr": _thin([f for f, _ in kept]),
                "tpr": _thin([t for _, t in kept]),
            }
        )
    return curves


def audit_summary(folder: Path, model: str) -> AuditSummary | None:
    """The model's audit report (``folder/audit-report.json``), or None when there is none.

    A file that does not parse is reported as a report whose ``notes`` say so,
    never as a server error.
    """
    path = folder / REPORT_JSON
    stamp = _stamp(path)
    if stamp is None:
        return None
    has_html = (folder / REPORT_HTML).is_file()
    known = _cache.get(path)
    if known is not None and known[0] == stamp:
        return replace(known[1], has_html=has_html)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raw = {"notes": [f"{REPORT_JSON} could not be read: {exc}"]}
    if not isinstance(raw, dict):
        raw = {"notes": [f"{REPORT_JSON} is not a JSON object"]}
    summary = AuditSummary(
        model=model,
        written=datetime.fromtimestamp(stamp[0] / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        report=_strip(raw),
        curves=_curves(raw),
        has_html=has_html,
    )
    with _cache_lock:
        _cache[path] = (stamp, summary)
    return summary


def audit_html(folder: Path) -> str | None:
    """The model's HTML audit report, or None when there is none."""
    try:
        return (folder / REPORT_HTML).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def report_response(html: str) -> HTMLResponse:
    """The HTML report as an answer that cannot run anything, shown only in our own frames.

    The report is self-contained (inline CSS, plots as ``data:`` PNGs) and has no
    script, but it is a file on disk that anyone who can write the model's folder
    could change: its answer gets a CSP of its own that allows no script, no
    request of any kind, only its inline styles and ``data:`` images, and puts it
    in a sandbox (a unique origin: no cookies, no forms, no top navigation), and
    it may be framed only by the console's own pages.
    """
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": REPORT_CSP,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "SAMEORIGIN",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "Cross-Origin-Resource-Policy": "same-origin",
        },
    )
