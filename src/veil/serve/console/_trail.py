"""The console's trail pages: search, one entry with its inclusion proof, verification.

Every page calls what the JSON API calls (``veil.serve._trail_routes``), with
the same permission, ``trail.read`` (auditors and owners):

* ``GET /console/trail``: a filter form (actor, action or prefix, dataset,
  outcome, since, until) and one page of entries, newest first, with keyset
  "Older" / "Newer" links (``Trail.page`` / ``Trail.newer``: an indexed range
  read at any trail size), as ``GET /v1/trail``; and the verification box:
  the trail's size, the last signed head and its signature check, the last
  recorded full verification, the one running (``GET /v1/trail/status``),
  and the button that starts one (``POST /v1/trail/verify``).
* ``POST /console/trail/verify``: starts (or joins) the worker's background
  verification, then back to the page (POST, redirect, GET).
* ``GET /console/trail/verification``: the status as JSON, which ``trail.js``
  polls while a verification runs (without JavaScript the page offers a
  refresh link).
* ``GET /console/trail/{seq}``: the entry's body pretty-printed and its
  inclusion proof: each sibling hash with the entries it covers, the signed
  head it is against, and the standalone verifier's check of it, run here
  (``veil.access.verifier``), as ``GET /v1/trail/{seq}/proof``.
* ``GET /console/trail/{seq}/proof.json``: the proof document to download.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from veil.access import Outcome, Permission
from veil.errors import InvalidInputError
from veil.serve._auth import Caller, annotate
from veil.serve._trail_routes import (
    VERIFY_PERMISSION,
    entry_of,
    proof_of,
    search,
    start_verification,
    status_of,
)
from veil.serve.console._render import redirect, render
from veil.serve.console._session import Form, console_needs, form_data

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

PER_PAGE = 50
FILTERS = ("actor", "action", "dataset", "outcome", "since", "until")
_LIMITS = {"actor": 256, "action": 65, "dataset": 128, "outcome": 16, "since": 40, "until": 40}
MAX_SEQ = 2**62
Seq = Annotated[int, Path(ge=1, le=MAX_SEQ)]
Reader = Annotated[Caller, console_needs(Permission.TRAIL_READ)]


def _text(request: Request, name: str) -> str:
    value = request.query_params.get(name, "").strip()
    if len(value) > _LIMITS.get(name, 40):
        raise InvalidInputError(
            f"the '{name}' filter is too long",
            expected=f"at most {_LIMITS.get(name, 40)} characters",
            got=f"{len(value)} characters",
            fix=f"shorten the '{name}' filter",
        )
    return value


def _when(name: str, value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            f"the '{name}' filter is not a date and time",
            expected="ISO 8601, such as 2026-12-06T10:00 (no zone: UTC)",
            got=repr(value)[:60],
            fix=f"pick the '{name}' time with the form's date picker, or leave it empty",
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _seq(name: str, value: str) -> int | None:
    if not value:
        return None
    if not value.isdigit() or len(value) > len(str(MAX_SEQ)) or int(value) > MAX_SEQ:
        raise InvalidInputError(
            f"'{name}' is not an entry number",
            expected="a whole number of 1 or more (a link from this page)",
            got=repr(value)[:40],
            fix="follow the page's Older and Newer links",
        )
    return int(value)


def _outcome(value: str) -> str | None:
    if value and value not in {str(o) for o in Outcome}:
        raise InvalidInputError(
            "no such outcome",
            expected=" or ".join(str(o) for o in Outcome),
            got=repr(value)[:40],
            fix="choose an outcome from the list",
        )
    return value or None


def _url(filters: dict[str, str], **cursor: int) -> str:
    kept = {k: v for k, v in filters.items() if v}
    return "/console/trail?" + urlencode({**kept, **cursor})


@router.get("/trail")
def trail_page(request: Request, caller: Reader) -> HTMLResponse:
    """Search the trail: one page of entries, newest first, and the verification box."""
    shown = {name: _text(request, name) for name in FILTERS}
    filters: dict[str, Any] = {
        "actor": shown["actor"] or None,
        "action": shown["action"] or None,
        "dataset": shown["dataset"] or None,
        "outcome": _outcome(shown["outcome"]),
        "since": _when("since", shown["since"]),
        "until": _when("until", shown["until"]),
    }
    before = _seq("before", request.query_params.get("before", ""))
    after = _seq("after", request.query_params.get("after", ""))
    if before is not None and after is not None:
        raise InvalidInputError(
            "a page is asked for before an entry or after one, not both",
            expected="?before= (older) or ?after= (newer)",
            got=f"before={before}, after={after}",
            fix="follow the page's Older and Newer links",
        )
    annotate(request, before=before, after=after, dataset=filters["dataset"])
    trail = caller.access.trail
    if after is not None:
        entries, more_newer = trail.newer(after=after, limit=PER_PAGE, **filters)
        rows = [entry_of(e) for e in entries]
        older = _url(shown, before=rows[-1]["seq"]) if rows else None
        newer = _url(shown, after=rows[0]["seq"]) if rows and more_newer else None
    else:
        page = search(trail, **filters, before=before, limit=PER_PAGE)
        rows = page["entries"]
        older = _url(shown, before=page["next_before"]) if page["next_before"] else None
        newer = _url(shown, after=rows[0]["seq"]) if before is not None and rows else None
    notice = None
    if request.query_params.get("verify") == "started":
        notice = {"kind": "ok", "text": "A full verification of the trail is running."}
    return render(
        request,
        "trail/index.html",
        caller=caller,
        nav="trail",
        title="Trail",
        notice=notice,
        filters=shown,
        outcomes=[("", "any"), *((str(o), str(o)) for o in Outcome)],
        entries=rows,
        older=older,
        newer=newer,
        status=status_of(request, trail),
        filtered=any(shown.values()),
    )


@router.post("/trail/verify", response_model=None)
def verify_action(
    request: Request,
    caller: Annotated[Caller, console_needs(VERIFY_PERMISSION)],
    form: Annotated[Form, Depends(form_data)],
) -> Response:
    """Start a full verification (or join the one running), then show the trail page."""
    del form  # checked by form_data: CSRF token and same origin
    job, started = start_verification(request, caller)
    annotate(request, verification=job["number"], started=started)
    return redirect("/console/trail?verify=started#verification")


@router.get("/trail/verification")
def verification_json(request: Request, caller: Reader) -> JSONResponse:
    """The verification status as JSON (``trail.js`` polls it while one runs)."""
    status = status_of(request, caller.access.trail)
    return JSONResponse(
        {k: status[k] for k in ("size", "last_verification", "running")},
        headers={"cache-control": "no-store"},
    )


def _path_rows(index: int, size: int, proof: list[str]) -> list[dict[str, Any]]:
    """Each sibling hash of the proof with its side and the entries it covers (RFC 6962 PATH)."""
    sides: list[tuple[str, int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        split = lo + (1 << ((hi - lo - 1).bit_length() - 1))
        if index < split:
            sides.append(("right", split, hi))
            hi = split
        else:
            sides.append(("left", lo, split))
            lo = split
    sides.reverse()
    return [
        {"level": n, "side": side, "first": a + 1, "last": b, "hash": value}
        for n, ((side, a, b), value) in enumerate(zip(sides, proof, strict=True), start=1)
    ]


@router.get("/trail/{seq}")
def entry_page(request: Request, seq: Seq, caller: Reader) -> HTMLResponse:
    """One entry: its body, its inclusion proof and the verifier's check of it."""
    annotate(request, seq=seq)
    trail = caller.access.trail
    entry = trail.entry(seq)
    proved = proof_of(trail, seq)
    document = proved["document"]
    head = document["head"]
    return render(
        request,
        "trail/entry.html",
        caller=caller,
        nav="trail",
        title=f"Trail entry {seq}",
        entry=entry_of(entry),
        body=json.dumps(json.loads(entry.body), indent=2, sort_keys=True),
        head=head,
        path=_path_rows(seq - 1, int(head["size"]), list(document["proof"])),
        verified=proved["verified"],
        problem=proved["problem"],
        public_key=trail.public_key,
    )


@router.get("/trail/{seq}/proof.json")
def proof_download(request: Request, seq: Seq, caller: Reader) -> JSONResponse:
    """The entry's inclusion proof document, to check with ``python -m veil.access.verifier``."""
    annotate(request, seq=seq)
    document = proof_of(caller.access.trail, seq)["document"]
    return JSONResponse(
        document,
        headers={
            "content-disposition": f'attachment; filename="trail-{seq}-proof.json"',
            "cache-control": "no-store",
        },
    )
