"""``veil bench serve --parts console``: every console page's server time at scale (issue 25).

The goal: every page of ``/console`` renders in under 300 ms of server time with
100,000 ledger events and 1,000,000 trail entries in the database. The part

1. builds the workspace (:mod:`veil.bench._serve_console_data`: the events through
   the ledger's ``charge_many``, the entries through ``Trail.append_many``; each step
   timed), or reuses one an earlier run kept (``--reuse DIR``);
2. starts ``veil serve`` on it (one worker, 127.0.0.1, a free port), signs in to the
   console once per role (``POST /console/sign-in`` with the role's key; the session
   cookie), and requests each page ``repeats`` times after ``warmup`` untimed requests;
3. reads each answer's ``Server-Timing: app;dur=<ms>`` header (the time the gateway spent
   on the request) and reports p50, p95 and max per page, and whether its p95 is under
   300 ms; the client's time (loopback HTTP included) is reported beside it.

Pages: the home page, the datasets list, the dataset's page (also right after a new
release: an analyst's query is charged before each request, so a cache keyed by the
ledger's last event is always stale), its releases' second
page with a filter (the "next" link of the filtered first page), the query form's
POST (one small COUNT; the budget is 1,000 epsilon so no run exhausts it), the models
list and the model's page, the trail search unfiltered and by actor, an old and a new
trail entry (with their inclusion proofs in a 1,000,000-entry tree), the access page.
"""

from __future__ import annotations

import re
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from veil.bench._result import Column, Note, Table, fixed, verdict
from veil.bench._serve_console_data import (
    ConsoleWorkspace,
    build,
    folder_is_empty,
    load,
    sizes_now,
)
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit

__all__ = [
    "FULL", "GOAL_MS", "QUICK", "check_sizes", "console_blocks", "console_goal", "run_console",
]  # fmt: skip

GOAL_MS = 300.0
FULL: dict[str, Any] = {"ledger_events": 100_000, "trail_entries": 1_000_000,
                        "page_repeats": 40, "page_warmup": 2}  # fmt: skip
QUICK: dict[str, Any] = {"ledger_events": 300, "trail_entries": 3_000,
                         "page_repeats": 3, "page_warmup": 1}  # fmt: skip
_TIMING = re.compile(r"(?:^|,)\s*app\s*;[^,]*?dur=([0-9.]+)")
_QUERY_SQL = "SELECT COUNT(*) FROM adult WHERE age > 40"


@dataclass(frozen=True)
class Page:
    """One page the part requests: its label, the role that asks, and how."""

    label: str
    role: str
    path: str
    method: str = "GET"
    form: Mapping[str, str] | None = None
    csrf_from: str | None = None  # the page whose form carries the CSRF token
    after_release: bool = False  # an analyst's query is charged before each request


class _Forms(HTMLParser):
    """Hidden inputs (the CSRF token) and links (the pager's next page) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: dict[str, str] = {}
        self.links: list[tuple[str, str]] = []  # (href, rel + text of the anchor)
        self._anchor: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.hidden[a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self._anchor = [a["href"], a.get("rel", "") + " " + a.get("aria-label", "")]

    def handle_data(self, data: str) -> None:
        if self._anchor is not None:
            self._anchor[1] += " " + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._anchor is not None:
            self.links.append((self._anchor[0], self._anchor[1].strip().lower()))
            self._anchor = None


def _parse(html: str) -> _Forms:
    forms = _Forms()
    forms.feed(html)
    return forms


def _csrf(html: str) -> dict[str, str]:
    """The page's CSRF field (the hidden input whose name says csrf), as a form entry."""
    return {k: v for k, v in _parse(html).hidden.items() if "csrf" in k.lower()}


def _next_link(html: str, base: str) -> str | None:
    """The pager's link to the next (older) page, if the page has one."""
    links = _parse(html).links
    for href, words in links:  # the pager's rel="next" first, then a link saying so
        if words.split()[:1] == ["next"]:
            return urljoin(base, href)
    for href, words in links:
        if "next" in words.split() or "older" in words:
            return urljoin(base, href)
    return None


def server_ms(headers: Mapping[str, str]) -> float | None:
    """The ``app`` metric of a ``Server-Timing`` header, in milliseconds, or None."""
    found = _TIMING.search(headers.get("server-timing", ""))
    return float(found.group(1)) if found else None


def _pages(ws: ConsoleWorkspace) -> list[Page]:
    d, m = ws.dataset, ws.model
    old, new = 2, ws.trail_entries  # seq 1 is trail.start; the last entry the build made
    actor = ws.actors["analyst-1"]
    return [
        Page("home (owner)", "owner", "/console"),
        Page("home (analyst)", "analyst", "/console"),
        Page("datasets", "analyst", "/console/datasets"),
        Page("dataset", "owner", f"/console/datasets/{d}"),
        Page("dataset, after a new release", "owner", f"/console/datasets/{d}",
             after_release=True),
        Page("releases, page 2, by actor", "owner", f"/console/datasets/{d}?actor={actor}"),
        Page("query (POST)", "analyst", f"/console/datasets/{d}/query", method="POST",
             form={"sql": _QUERY_SQL, "epsilon": "0.01", "purpose": "benchmark: console"},
             csrf_from=f"/console/datasets/{d}/query"),
        Page("models", "analyst", "/console/models"),
        Page("model", "auditor", f"/console/models/{m}"),
        Page("trail", "auditor", "/console/trail"),
        Page("trail by actor", "auditor", f"/console/trail?actor={actor}"),
        Page(f"trail entry {old:,} (old)", "auditor", f"/console/trail/{old}"),
        Page(f"trail entry {new:,} (new)", "auditor", f"/console/trail/{new}"),
        Page("access", "owner", "/console/access"),
    ]  # fmt: skip


def _sign_in(client: Any, token: str) -> int:
    """Exchange ``token`` for the console's session cookie; the sign-in answer's status."""
    form = {"key": token}
    page = client.get("/console/sign-in")
    if page.status_code == 200:  # noqa: PLR2004
        form |= _csrf(page.text)
    answer = client.post("/console/sign-in", data=form, follow_redirects=False)
    return int(answer.status_code)


def _quantiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {"p50_ms": statistics.median(ordered), "p95_ms": p95, "max_ms": ordered[-1]}


def _measure(
    client: Any, page: Page, *, repeats: int, warmup: int, prelude: Any = None
) -> dict[str, Any]:
    """Request ``page`` warm-up + ``repeats`` times; the timed requests' figures."""
    path = page.path
    if page.label.startswith("releases, page 2"):
        first = client.get(path)
        nxt = _next_link(first.text, str(first.url)) if first.status_code == 200 else None  # noqa: PLR2004
        if nxt is None:
            return {"path": path, "status": first.status_code, "requests": 0,
                    "timed_by_server": 0, "note": "no next-page link on page 1"}  # fmt: skip
        path = urlsplit(nxt).path + ("?" + urlsplit(nxt).query if urlsplit(nxt).query else "")
    server: list[float] = []
    wall: list[float] = []
    warm: list[float | None] = []
    statuses: dict[int, int] = {}
    for i in range(warmup + repeats):
        if prelude is not None:
            prelude()
        if page.method == "POST":
            form = dict(page.form or {})
            source = client.get(page.csrf_from or path)
            form |= _csrf(source.text)
            began = time.perf_counter()
            answer = client.post(path, data=form, follow_redirects=False)
        else:
            began = time.perf_counter()
            answer = client.get(path, follow_redirects=False)
        elapsed = (time.perf_counter() - began) * 1000
        if i < warmup:  # not counted; kept (a first request may fill a cache)
            warm.append(server_ms(answer.headers))
            continue
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        wall.append(elapsed)
        ms = server_ms(answer.headers)
        if ms is not None:
            server.append(ms)
    status = max(statuses, key=lambda s: statuses[s])
    out: dict[str, Any] = {"path": path, "status": status, "statuses": statuses,
                           "requests": repeats, "timed_by_server": len(server)}  # fmt: skip
    out |= _quantiles(server)
    out["warmup_ms"] = warm
    out["client_p50_ms"] = statistics.median(wall) if wall else None
    return out


def measure_pages(
    url: str, ws: ConsoleWorkspace, *, repeats: int, warmup: int, progress: Any = None
) -> list[dict[str, Any]]:
    """Sign in per role and time every page (see the module's text)."""
    import httpx  # noqa: PLC0415 - the serve extra

    clients: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    try:
        signed: dict[str, int] = {}
        pages = _pages(ws)
        for role in sorted({p.role for p in pages}):
            # The Origin of a browser on the console's own address (the POSTs' same-origin check).
            clients[role] = httpx.Client(base_url=url, timeout=120.0, headers={"Origin": url})
            signed[role] = _sign_in(clients[role], ws.tokens[role])
        for n, page in enumerate(pages):
            if progress is not None:
                progress(f"console page {n + 1}/{len(pages)}: {page.label}")
            prelude = None
            if page.after_release:
                query = next(q for q in pages if q.method == "POST")

                def prelude(query: Page = query) -> None:
                    _measure(clients[query.role], query, repeats=1, warmup=0)

            found = _measure(
                clients[page.role], page, repeats=repeats, warmup=warmup, prelude=prelude
            )
            p95 = found.get("p95_ms")
            under = None if p95 is None else found["status"] == 200 and p95 < GOAL_MS  # noqa: PLR2004
            rows.append({
                "page": page.label, "role": page.role, "method": page.method,
                "sign_in_status": signed[page.role], **found, "under_goal": under,
            })  # fmt: skip
    finally:
        for client in clients.values():
            client.close()
    return rows


def _sizes(overrides: Mapping[str, Any] | None, *, quick: bool) -> dict[str, Any]:
    chosen = {k: v for k, v in (overrides or {}).items() if k in FULL}
    return {**(QUICK if quick else FULL), **chosen}


def check_sizes(overrides: Mapping[str, Any] | None, *, quick: bool) -> None:
    """Refuse sizes the build cannot honour, before anything runs."""
    p = _sizes(overrides, quick=quick)
    if p["ledger_events"] < 1 or p["trail_entries"] < p["ledger_events"] + 100:
        raise InvalidInputError(
            "bad console benchmark sizes",
            expected="--ledger-events >= 1 and --trail-entries at least 100 more (every "
            "charge writes a trail entry, and so does every key and grant)",
            got=f"ledger events {p['ledger_events']:,}, trail entries {p['trail_entries']:,}",
        )
    if p["page_repeats"] < 1 or p["page_warmup"] < 0:
        raise InvalidInputError(
            "bad console page repeats", expected="--page-repeats >= 1",
            got=str(p["page_repeats"]),
        )  # fmt: skip


def _workspace(
    folder: Path, reuse: Path | None, train_file: Path, p: Mapping[str, Any], progress: Any
) -> tuple[ConsoleWorkspace, bool]:
    if reuse is not None and not folder_is_empty(reuse):
        return load(reuse), True
    target = reuse if reuse is not None else folder
    target.mkdir(parents=True, exist_ok=True)
    built = build(
        target, train_file, ledger_events=p["ledger_events"], trail_entries=p["trail_entries"],
        progress=progress,
    )  # fmt: skip
    return built, False


def run_console(
    folder: Path,
    train_file: Path,
    *,
    quick: bool,
    overrides: Mapping[str, Any] | None,
    reuse: Path | None = None,
    progress: ProgressCallback | None = None,
    step: Any = None,
) -> dict[str, Any]:
    """The console part: build (or reuse) the workspace, serve it, time every page."""
    from veil.bench._serve_load import gateway  # noqa: PLC0415

    check_sizes(overrides, quick=quick)
    p = _sizes(overrides, quick=quick)
    ws, reused = _workspace(folder / "workspace", reuse, train_file, p, progress)
    now = sizes_now(Path(ws.home))  # what the pages read (a reused workspace has grown)
    log = folder / "console.log"
    folder.mkdir(parents=True, exist_ok=True)
    emit(progress, "console pages", 0, 1, unit="runs", detail="starting veil serve")
    try:
        with gateway(Path(ws.home), log=log) as url:
            rows = measure_pages(
                url, ws, repeats=p["page_repeats"], warmup=p["page_warmup"], progress=step
            )
    finally:
        if reuse is None:
            shutil.rmtree(folder / "workspace", ignore_errors=True)
    emit(progress, "console pages", 1, 1, unit="runs", detail="done")
    return {
        "ledger_events": ws.ledger_events, "trail_entries": ws.trail_entries,
        "at_start": now, "reused": reused,
        "workspace": str(reuse) if reuse is not None else None,
        "build_seconds": ws.seconds, "build_rates": ws.rates,
        "repeats": p["page_repeats"], "warmup": p["page_warmup"],
        "goal_ms": GOAL_MS, "pages": rows,
    }  # fmt: skip


def console_goal(c: Mapping[str, Any]) -> dict[str, Any]:
    """The goal row: every page's p95 under 300 ms (a page that failed or went untimed fails it)."""
    timed = [r for r in c["pages"] if r.get("p95_ms") is not None]
    worst = max(timed, key=lambda r: r["p95_ms"], default=None)
    bad = [r["page"] for r in c["pages"] if r.get("under_goal") is not True]
    measured = "-" if worst is None else f"worst p95 {worst['p95_ms']:.1f} ms ({worst['page']})"
    if bad:
        measured += f"; not met by: {', '.join(bad)}"
    now = c.get("at_start") or c
    return {
        "goal": f"every console page < {GOAL_MS:g} ms server time with "
        f"{now['ledger_events']:,} ledger events and {now['trail_entries']:,} trail entries",
        "measured": measured,
        "met": None if worst is None else not bad,
    }


def console_blocks(c: Mapping[str, Any]) -> list[Table | Note]:
    """The per-page table and the build's note."""
    now = c.get("at_start") or c
    table = Table(
        title=f"Console pages: server time (Server-Timing app) over {c['repeats']} requests "
        f"after {c['warmup']} warm-up, {now['ledger_events']:,} ledger events, "
        f"{now['trail_entries']:,} trail entries, one worker, SQLite (1st: the first warm-up "
        "request; client: loopback HTTP included)",
        columns=(
            Column("page", justify="left"),
            Column("role", justify="left"),
            Column("status", fixed("d")),
            Column("p50 ms", fixed(".1f")),
            Column("p95 ms", fixed(".1f")),
            Column("max ms", fixed(".1f")),
            Column("client p50", fixed(".1f")),
            Column("1st ms", fixed(".1f")),
            Column(f"< {GOAL_MS:g} ms", verdict),
        ),
        rows=tuple(
            (
                r["page"],
                r["role"],
                r["status"],
                r.get("p50_ms"),
                r.get("p95_ms"),
                r.get("max_ms"),
                r.get("client_p50_ms"),
                (r.get("warmup_ms") or [None])[0],
                r.get("under_goal"),
            )
            for r in c["pages"]
        ),
    )
    s, rates = c["build_seconds"], c["build_rates"]
    how = "reused from " + str(c["workspace"]) if c["reused"] else "built for this run"
    note = Note(
        f"Workspace {how}: set-up (dataset, DP model, keys) {s.get('setup', 0):.1f} s; "
        f"ledger events through Ledger.charge_many {s.get('ledger', 0):.1f} s "
        f"({rates.get('charges_per_s', 0):,.0f}/s); trail entries through Trail.append_many "
        f"{s.get('trail', 0):.1f} s ({rates.get('trail_entries_per_s', 0):,.0f}/s)."
    )
    untimed = [r["page"] for r in c["pages"] if r.get("p95_ms") is None and r.get("requests")]
    blocks: list[Table | Note] = [table, note]
    if untimed:
        blocks.append(Note("No Server-Timing header on: " + ", ".join(untimed)))
    return blocks
