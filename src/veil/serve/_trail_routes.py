"""The trail over HTTP: search, entries, inclusion proofs, status and verification.

Every route needs ``trail.read`` (auditors and owners hold it): reading the
trail, proving an entry and running a full verification all only read it
(the verification appends one ``trail.verify`` entry with its result, as any
recorded read does). ``trail.checkpoint`` is a workspace owner's signing
action and is not needed to check the trail.

- ``GET /v1/trail``: a page of entries, newest first, filtered (``Trail.page``:
  keyset on ``seq`` over indexes); ``next_before`` continues it.
- ``GET /v1/trail/{seq}``: one entry with its canonical body.
- ``GET /v1/trail/{seq}/proof``: its inclusion proof (``veil-trail-proof/v1``)
  against the smallest signed head that covers it, which the standalone
  verifier (``python -m veil.access.verifier``) checks without Veil.
- ``GET /v1/trail/status``: the trail's size, the last signed head and whether
  its Ed25519 signature verifies with the workspace's key, the last full
  verification's result (its ``trail.verify`` entry), and the one running in
  this worker, if any, with its progress.
- ``POST /v1/trail/verify``: starts a full verification in a background thread
  of this worker (202); while one runs, a second request gets that one.

The console's trail pages (``veil.serve.console._trail``) call the functions
here, so both surfaces make the same checks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from veil.access import Access, Outcome, Permission, Trail, TrailEntry
from veil.access.verifier import check_head, check_inclusion_proof
from veil.progress import ProgressEvent
from veil.serve._auth import Caller, annotate, needs
from veil.serve._errors import ERROR_RESPONSES

__all__ = [
    "MAX_PAGE",
    "Verification",
    "entry_of",
    "proof_of",
    "router",
    "search",
    "start_verification",
    "status_of",
]

router = APIRouter(prefix="/v1/trail", tags=["trail"], responses=ERROR_RESPONSES)

MAX_PAGE = 200
VERIFY_PERMISSION = Permission.TRAIL_READ
Seq = Annotated[int, Path(ge=1, le=2**62, description="The entry's number (1 is the first).")]
OutcomeName = Literal["allowed", "refused", "failed"]


# ---------------------------------------------------------------- models
class EntryModel(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    outcome: str
    purpose: str
    dataset: str | None
    links: dict[str, Any]
    details: dict[str, Any]
    leaf: str = Field(description="RFC 6962 leaf hash of the canonical body (hex).")


class EntryDetail(EntryModel):
    body: str = Field(description="The canonical JSON the Merkle leaf covers.")


class TrailPage(BaseModel):
    entries: list[EntryModel] = Field(description="Newest first.")
    next_before: int | None = Field(description="Pass as ?before= for the next (older) page.")
    limit: int
    filters: dict[str, Any]


class TrailStatus(BaseModel):
    size: int = Field(description="Entries in the trail now.")
    public_key: str | None = Field(description="The workspace's trail key (hex), if known.")
    signed_head: dict[str, Any] | None = Field(
        description="The largest signed head, with signature_valid and, if not, why."
    )
    last_verification: dict[str, Any] | None = Field(
        description="The result recorded by the latest trail.verify entry."
    )
    running: dict[str, Any] | None = Field(
        description="The verification this worker is running or ran last (progress, result)."
    )


# ---------------------------------------------------------------- shared functions
def entry_of(entry: TrailEntry) -> dict[str, Any]:
    return entry.to_dict()


def search(
    trail: Trail,
    *,
    actor: str | None = None,
    action: str | None = None,
    dataset: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: int | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """A page of the trail as the API returns it (``limit`` capped at :data:`MAX_PAGE`)."""
    filters: dict[str, Any] = {
        "actor": actor,
        "action": action,
        "dataset": dataset,
        "outcome": outcome,
        "since": since,
        "until": until,
    }
    entries, next_before = trail.page(**filters, before=before, limit=min(limit, MAX_PAGE))
    return {
        "entries": [entry_of(e) for e in entries],
        "next_before": next_before,
        "limit": min(limit, MAX_PAGE),
        "filters": {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in filters.items()
            if v is not None
        },
    }


def proof_of(trail: Trail, seq: int) -> dict[str, Any]:
    """The inclusion proof document of entry ``seq`` and the verifier's check of it.

    Returns:
        ``{"document": ..., "verified": bool, "problem": str | None}``: the check
        is :func:`veil.access.verifier.check_inclusion_proof` with the
        workspace's public key (the head's own when the trail has none).
    """
    document = trail.prove(seq)
    key = bytes.fromhex(trail.public_key) if trail.public_key else None
    problem = check_inclusion_proof(document, key)
    return {"document": document, "verified": problem is None, "problem": problem}


def status_of(request: Request, trail: Trail) -> dict[str, Any]:
    """Size, last signed head (signature checked), last verification, the running one.

    The running verification is read first: a verification records its
    ``trail.verify`` entry before it says it is done, so a status that shows
    one done also shows its entry (read the other way round, a verification
    finishing between the two reads showed as done with no last entry).
    """
    running = _verifier(request).snapshot()
    head = trail.signed_head()
    signed = None
    if head is not None:
        key = bytes.fromhex(trail.public_key) if trail.public_key else None
        why = check_head(head.to_dict(), key)
        signed = {**head.to_dict(), "signature_valid": why is None, "problem": why}
    latest, _ = trail.page(action="trail.verify", limit=1)
    last = None
    if latest:
        entry = latest[0]
        last = {"seq": entry.seq, "at": entry.at, "actor": entry.actor, **dict(entry.details)}
    return {
        "size": trail.size(),
        "public_key": trail.public_key,
        "signed_head": signed,
        "last_verification": last,
        "running": running,
    }


@dataclass
class Verification:
    """One full verification in a worker's background thread."""

    number: int
    actor: str
    started_at: str
    state: str = "running"  # running, done, failed
    completed: float = 0
    total: float | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def progress(self, event: ProgressEvent) -> None:
        with self._lock:
            self.completed, self.total = event.completed, event.total

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "number": self.number,
                "actor": self.actor,
                "state": self.state,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "completed": self.completed,
                "total": self.total,
                "result": self.result,
            }


class _Verifier:
    """This worker's verifications: one at a time; the latest kept for the status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: Verification | None = None
        self.count = 0

    def snapshot(self) -> dict[str, Any] | None:
        current = self.current
        return None if current is None else current.to_dict()

    def start(self, access: Access) -> tuple[Verification, bool]:
        """The running verification, or a new one started as ``access``'s principal."""
        with self._lock:
            if self.current is not None and self.current.state == "running":
                return self.current, False
            self.count += 1
            job = Verification(self.count, access.principal.name, _now())
            self.current = job
        thread = threading.Thread(
            target=_run, args=(job, access), name=f"veil-trail-verify-{job.number}", daemon=True
        )
        thread.start()
        return job, True


_VERIFIERS_LOCK = threading.Lock()


def _verifier(request: Request) -> _Verifier:
    app_state = request.app.state
    found: _Verifier | None = getattr(app_state, "veil_trail_verifier", None)
    if found is None:
        with _VERIFIERS_LOCK:
            found = getattr(app_state, "veil_trail_verifier", None)
            if found is None:
                found = _Verifier()
                app_state.veil_trail_verifier = found
    return found


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(job: Verification, access: Access) -> None:
    """Verify the whole trail (in this thread: workers=1, no fork from a threaded server)."""
    started = time.perf_counter()
    try:
        report = access.trail.verify(progress=job.progress, workers=1)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed verification, never lost
        result = {
            "ok": False,
            "error": type(exc).__name__,
            "seconds": round(time.perf_counter() - started, 3),
        }
        outcome = Outcome.FAILED
    else:
        result = {
            "ok": report.ok,
            "size": report.size,
            "root": report.root,
            "problems": len(report.problems),
            "first_problems": [p.to_dict() for p in report.problems[:5]],
            "heads_checked": report.heads_checked,
            "warnings": len(report.warnings),
            "seconds": round(report.seconds, 3),
        }
        outcome = Outcome.ALLOWED
    try:
        entry = access.record("trail.verify", outcome=outcome, details=result)
        result["seq"] = entry.seq
    except Exception as exc:  # noqa: BLE001 - the result stays visible in this worker
        result["recorded"] = f"not recorded: {type(exc).__name__}"
    with job._lock:  # noqa: SLF001 - the job's own lock
        job.result = result
        job.state = "done" if outcome is Outcome.ALLOWED else "failed"
        job.finished_at = _now()


def start_verification(request: Request, caller: Caller) -> tuple[dict[str, Any], bool]:
    """Start a full verification as the caller (or join the running one): (job, started)."""
    job, started = _verifier(request).start(caller.access)
    return job.to_dict(), started


# ---------------------------------------------------------------- routes
@router.get("", response_model=TrailPage)
def list_trail(  # noqa: PLR0917 - FastAPI reads the query parameters by name
    request: Request,
    caller: Annotated[Caller, needs(Permission.TRAIL_READ)],
    actor: Annotated[str | None, Query(max_length=256, description="Who acted.")] = None,
    action: Annotated[
        str | None,
        Query(max_length=65, description="An action, or a prefix ending in '.' or '*'."),
    ] = None,
    dataset: Annotated[str | None, Query(max_length=128, description="A dataset's name.")] = None,
    outcome: Annotated[OutcomeName | None, Query(description="What became of it.")] = None,
    since: Annotated[
        datetime | None, Query(description="At or after this time (ISO 8601; no zone: UTC).")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Before this time (ISO 8601; no zone: UTC).")
    ] = None,
    before: Annotated[
        int | None, Query(ge=1, le=2**62, description="Entries with seq below this.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Entries per page.")] = 50,
) -> dict[str, Any]:
    """A page of the trail, newest first (keyset paging: pass ``next_before`` on)."""
    annotate(request, dataset=dataset, before=before, limit=limit)
    return search(
        caller.access.trail,
        actor=actor,
        action=action,
        dataset=dataset,
        outcome=outcome,
        since=since,
        until=until,
        before=before,
        limit=limit,
    )


@router.get("/status", response_model=TrailStatus)
def trail_status(
    request: Request, caller: Annotated[Caller, needs(Permission.TRAIL_READ)]
) -> dict[str, Any]:
    """The trail's size, last signed head (signature checked) and verifications."""
    return status_of(request, caller.access.trail)


@router.post("/verify", status_code=202)
def verify_trail(
    request: Request, caller: Annotated[Caller, needs(VERIFY_PERMISSION)]
) -> JSONResponse:
    """Start a full verification in this worker (202), or return the one running."""
    job, started = start_verification(request, caller)
    annotate(request, verification=job["number"], started=started)
    return JSONResponse({"verification": job, "started": started}, status_code=202)


@router.get("/{seq}", response_model=EntryDetail)
def trail_entry(
    request: Request, seq: Seq, caller: Annotated[Caller, needs(Permission.TRAIL_READ)]
) -> dict[str, Any]:
    """One entry, with the canonical body its leaf hash covers."""
    annotate(request, seq=seq)
    entry = caller.access.trail.entry(seq)
    return {**entry_of(entry), "body": entry.body}


@router.get("/{seq}/proof")
def trail_proof(
    request: Request, seq: Seq, caller: Annotated[Caller, needs(Permission.TRAIL_READ)]
) -> dict[str, Any]:
    """The entry's inclusion proof (``veil-trail-proof/v1``) against a signed head."""
    annotate(request, seq=seq)
    document: dict[str, Any] = proof_of(caller.access.trail, seq)["document"]
    return document
