"""The gateway's cost and its shared accounting: the overhead and multi-worker parts.

* :func:`overhead`: open-loop runs at each rate, each in a fresh process
  (:func:`veil.bench._serve_load.open_loop`): the served model called in-process
  (encode, probabilities, shaping: what a request computes once the gateway is taken
  away) and ``POST /v1/models/{m}/predict`` with one record (authentication, limits,
  count budget, defences, monitor, the trail spool); at the goal's rate also
  ``GET /healthz`` (the HTTP floor: client, kernel, uvicorn, no gateway work). The goal
  compares the gateway with the in-process run at 200/s; the floor says how much of the
  difference is HTTP itself, and a lower rate how much is queueing. Then a closed-loop
  run (8 connections back to back) measures the requests/s one worker sustains: above
  it, an open-loop latency measures a queue, not the gateway.
* :func:`consistency`: with several workers on PostgreSQL and Redis, (a) 50 clients
  (one analyst key each) send DP queries against one budget until it refuses them, and
  the accepted count must equal what a sequential client gets from an identical budget;
  (b) many connections hammer one key whose rate is ``N/W``, for a little less than one
  window: the answers allowed must be ``N`` within 1 %.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from veil.bench._serve_load import Latency, error_code, hammer, open_loop, post_json
from veil.bench._serve_setup import COUNTS, COUNTS_ORACLE, MODEL

__all__ = ["consistency", "overhead"]

SQL = "SELECT COUNT(*) FROM t"
_MAX_SEQUENTIAL = 100_000


def overhead(
    url: str,
    home: Any,
    token: str,
    record: Mapping[str, Any],
    *,
    key_id: str,
    rates: Sequence[float],
    goal_rate: float,
    seconds: float,
    warmup: float,
    capacity_seconds: float,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Latency of the served model in-process and of the gateway at each rate; the HTTP floor
    at ``goal_rate``; then the gateway's closed-loop capacity (8 connections back to back)."""
    load = [os.getloadavg()]
    runs: list[Latency] = []
    by_rate = []
    predict = f"/v1/models/{MODEL}/predict"
    body = {"records": [dict(record)]}
    for rate in rates:
        timing = {"rate": rate, "seconds": seconds, "warmup": warmup}
        specs: list[dict[str, Any]] = [
            {"mode": "inprocess", "label": "in-process", "home": str(home), "model": MODEL,
             "key_id": key_id, "record": dict(record)},
            {"mode": "http", "label": f"POST {predict}", "url": url, "path": predict,
             "token": token, "body": body},
        ]  # fmt: skip
        if rate == goal_rate:
            specs.insert(
                1,
                {"mode": "http", "label": "GET /healthz (HTTP floor)", "url": url,
                 "method": "GET", "path": "/healthz", "token": token, "body": None},
            )  # fmt: skip
        found = []
        for spec in specs:
            if progress is not None:
                progress(f"overhead at {rate:g}/s: {spec['label']}")
            found.append(open_loop({**spec, **timing}, home=home))
            load.append(os.getloadavg())
        base, gateway = found[0], found[-1]
        by_rate.append(
            {
                "rate": rate,
                "overhead_p50_ms": gateway.p50_ms - base.p50_ms,
                "overhead_p99_ms": gateway.p99_ms - base.p99_ms,
                "gateway_errors": gateway.errors,
                "achieved_rate": gateway.achieved_rate,
            }
        )
        runs += found
    if progress is not None:
        progress("overhead: closed-loop capacity")
    start = time.perf_counter()
    codes = hammer(url, [(predict, body, token)], clients=8, seconds=capacity_seconds)
    elapsed = time.perf_counter() - start
    load.append(os.getloadavg())
    at_goal = next((r for r in by_rate if r["rate"] == goal_rate), by_rate[-1])
    return {
        "rates": list(rates),
        "goal_rate": goal_rate,
        "seconds": seconds,
        "warmup": warmup,
        "runs": [run.__dict__ for run in runs],
        "by_rate": by_rate,
        "overhead_p50_ms": at_goal["overhead_p50_ms"],
        "overhead_p99_ms": at_goal["overhead_p99_ms"],
        "gateway_errors": at_goal["gateway_errors"],
        "capacity_rps": codes.get("200", 0) / elapsed,
        "capacity_codes": dict(codes),
        "loadavg": [list(x) for x in load],
    }


def consistency(
    url: str,
    tokens: Mapping[str, str],
    record: Mapping[str, Any],
    *,
    clients: int,
    epsilon: float,
    limit: int,
    window: float,
    connections: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One budget under concurrent clients; one rate limit across workers."""
    import httpx  # noqa: PLC0415

    body = {"sql": SQL, "epsilon": epsilon, "purpose": "benchmark: one budget, many clients"}
    if progress is not None:
        progress("one budget: the sequential oracle")
    oracle: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for _ in range(_MAX_SEQUENTIAL):
            status, answer = post_json(
                client, f"/v1/datasets/{COUNTS_ORACLE}/query", body, tokens["oracle"]
            )
            code = error_code(status, answer)
            oracle[code] = oracle.get(code, 0) + 1
            if code == "budget_exceeded":
                break
    admitted = oracle.get("200", 0)
    if progress is not None:
        progress(f"one budget: {clients} concurrent clients")
    jobs = [(f"/v1/datasets/{COUNTS}/query", body, tokens[f"client-{i}"]) for i in range(clients)]
    codes = hammer(url, jobs, clients=clients, until=lambda code: code == "budget_exceeded")
    accepted = codes.get("200", 0)
    with httpx.Client(base_url=url, timeout=60.0) as client:
        ledger = client.get(
            f"/v1/datasets/{COUNTS}/budget",
            headers={"authorization": f"Bearer {tokens['client-0']}"},
        ).json()
    if progress is not None:
        progress(f"rate limit {limit}/{window:g} s across workers")
    predict = f"/v1/models/{MODEL}/predict"
    rate_codes = hammer(
        url,
        [(predict, {"records": [dict(record)]}, tokens["limited"])],
        clients=connections,
        seconds=0.9 * window,
    )
    allowed = rate_codes.get("200", 0)
    return {
        "clients": clients,
        "epsilon_per_query": epsilon,
        "admitted_sequential": admitted,
        "oracle_codes": oracle,
        "accepted_concurrent": accepted,
        "concurrent_codes": dict(codes),
        "ledger_events": ledger.get("events"),
        "ledger_remaining": ledger.get("remaining"),
        "budget_exact": accepted == admitted and ledger.get("events") == accepted,
        "rate_limit": f"{limit} per {window:g} seconds",
        "rate_window_seconds": 0.9 * window,
        "rate_offered": sum(rate_codes.values()),
        "rate_allowed": allowed,
        "rate_codes": dict(rate_codes),
        "rate_error": (allowed - limit) / limit,
        "rate_within_1pct": abs(allowed - limit) <= 0.01 * limit,
    }
