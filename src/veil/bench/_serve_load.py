"""Load for ``veil bench serve``: the gateway as a process, an open-loop generator, concurrency.

* :func:`gateway` starts ``veil serve`` (the product's command, not an app built in the
  benchmark's process) on 127.0.0.1 and a free port, waits for ``/readyz``, and stops it
  with SIGTERM (the graceful path) when the block ends.
* :func:`open_loop` measures latency the way a service's users meet it: a separate
  process sends requests on a **fixed schedule** (request ``i`` at ``t0 + i / rate``)
  whether or not earlier answers came back, and times each answer from its *scheduled*
  send time, so time spent queueing in the client, the kernel or the server counts
  (no coordinated omission). The same schedule drives the in-process baseline
  (:func:`served_predictor`), where the "request" is a call of the served model's own
  encode, probabilities and output shaping, under the same key's policy.
* Generators spread their connections over the loopback source addresses 127.0.0.1 to
  127.0.0.4: the gateway's limit per client address before authentication (200/s by
  default) is meant for many users on many addresses, and would otherwise be what a
  200 requests/s run from one address measures.
* :func:`hammer` runs many concurrent clients for the multi-worker checks (one budget,
  one rate limit): every answer's status and error code is counted.

Everything here talks to 127.0.0.1 only and is bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from veil._childenv import child_environment
from veil.errors import InvalidInputError, UnavailableError

__all__ = ["Latency", "gateway", "hammer", "open_loop", "post_json"]

_HOST = "127.0.0.1"
_MARK = "@@veil-bench-serve "
# Loopback source addresses the generators spread their connections over.
SOURCES = 4
# Requests sent one at a time before an open-loop run's clock starts.
PRIME = 20


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def gateway(
    home: Path,
    *,
    workers: int = 1,
    database_url: str | None = None,
    redis_url: str | None = None,
    options: Sequence[str] = (),
    log: Path,
    start_timeout: float = 180.0,
) -> Iterator[str]:
    """Run ``veil serve`` on the workspace ``home``; yield its base URL; stop it gracefully.

    The child gets an allow-listed environment (:func:`veil._childenv.child_environment`)
    plus the workspace, the database and Redis it is meant to use, and nothing else.
    """
    import httpx  # noqa: PLC0415 - the serve extra

    port = free_port()
    extra = {"VEIL_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    if database_url:
        extra["VEIL_DATABASE_URL"] = database_url
    if redis_url:
        extra["VEIL_REDIS_URL"] = redis_url
    command = [
        sys.executable,
        "-c",
        "from veil.cli import main; main()",
        "serve",
        "--host",
        _HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        *options,
    ]
    url = f"http://{_HOST}:{port}"
    with log.open("ab") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and command
            command, stdout=sink, stderr=subprocess.STDOUT, env=child_environment(extra)
        )
    try:
        deadline = time.monotonic() + start_timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    raise UnavailableError(
                        "the gateway exited before it was ready",
                        expected="`veil serve` answering /readyz with 200",
                        got=f"exit status {process.returncode}; log: {_tail(log)}",
                        fix="run the same `veil serve` by hand to see why",
                    )
                try:
                    if client.get(f"{url}/readyz").status_code == 200:  # noqa: PLR2004
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise UnavailableError(
                        "the gateway did not become ready in time",
                        expected=f"/readyz 200 within {start_timeout:.0f} s",
                        got=f"no answer; log: {_tail(log)}",
                        fix="check that PostgreSQL and Redis run on 127.0.0.1",
                    )
                time.sleep(0.2)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tail(log: Path, chars: int = 800) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class Latency:
    """One open-loop run: latency percentiles from the scheduled send times (ms)."""

    label: str
    rate: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    statuses: dict[str, int]
    achieved_rate: float

    @classmethod
    def of(
        cls, label: str, rate: float, seconds: list[float], statuses: Counter[str], span: float
    ) -> Latency:
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        if len(ms) == 0:
            ms = np.asarray([np.nan])
        p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        errors = sum(n for code, n in statuses.items() if not code.startswith("2"))
        return cls(
            label=label,
            rate=rate,
            requests=len(seconds),
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            max_ms=float(np.max(ms)),
            errors=errors,
            statuses=dict(statuses),
            achieved_rate=len(seconds) / span if span > 0 else 0.0,
        )


async def _schedule(
    call: Callable[[], Awaitable[str]], rate: float, seconds: float, warmup: float, drain: float
) -> tuple[list[float], Counter[str], float]:
    """Start ``call`` at ``t0 + i / rate``; latency of each from its scheduled time.

    Times are ``time.perf_counter`` (uvloop's ``loop.time`` ticks in whole milliseconds).
    """
    total = int((warmup + seconds) * rate)
    skip = int(warmup * rate)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    clock = time.perf_counter
    t0 = clock() + 0.05

    async def one(i: int, due: float) -> None:
        try:
            status = await call()
        except Exception as exc:  # noqa: BLE001 - a failed request is counted, not fatal
            status = type(exc).__name__
        if i >= skip:
            latencies.append(clock() - due)
            statuses[status] += 1

    tasks = []
    for i in range(total):
        due = t0 + i / rate
        wait = due - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.ensure_future(one(i, due)))
    _, pending = await asyncio.wait(tasks, timeout=drain) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    statuses["unfinished"] += len(pending)
    if not statuses["unfinished"]:
        del statuses["unfinished"]
    return latencies, statuses, seconds


def _clients(url: str, connections: int, sources: int) -> list[Any]:
    """One ``httpx.AsyncClient`` per source address 127.0.0.1 .. 127.0.0.<sources>.

    The gateway limits requests per client address before authentication (many users
    come from many addresses); spreading the generator's connections over a few loopback
    addresses keeps that limit from being what a measurement of one key measures.
    """
    import httpx  # noqa: PLC0415

    per = max(1, connections // sources)
    return [
        httpx.AsyncClient(
            base_url=url,
            timeout=60.0,
            transport=httpx.AsyncHTTPTransport(
                local_address=f"127.0.0.{k + 1}",
                limits=httpx.Limits(max_connections=per, max_keepalive_connections=per),
            ),
        )
        for k in range(sources)
    ]


async def _http_run(spec: Mapping[str, Any]) -> Latency:
    body = None if spec.get("body") is None else json.dumps(spec["body"]).encode()
    headers = {"authorization": f"Bearer {spec['token']}", "content-type": "application/json"}
    clients = _clients(spec["url"], spec.get("connections", 64), spec.get("sources", SOURCES))
    method, path = spec.get("method", "POST"), spec["path"]
    turn = 0
    try:

        async def call() -> str:
            nonlocal turn
            turn += 1
            client = clients[turn % len(clients)]
            response = await client.request(method, path, content=body, headers=headers)
            return str(response.status_code)

        # Open the connections and serve a few requests before the clock starts: the first
        # request of a model loads it and fits the monitor's reference (seconds, once).
        await asyncio.gather(*(c.get("/healthz") for c in clients for _ in range(4)))
        for _ in range(PRIME):
            await call()
        latencies, statuses, span = await _schedule(
            call, spec["rate"], spec["seconds"], spec["warmup"], spec.get("drain", 30.0)
        )
    finally:
        for client in clients:
            await client.aclose()
    return Latency.of(spec["label"], spec["rate"], latencies, statuses, span)


def served_predictor(
    home: Path, model: str, key_id: str | None
) -> Callable[[list[dict[str, Any]]], Any]:
    """The in-process path of one prediction: the served model's encode, proba and shaping.

    What the gateway computes for a request of ``key_id`` once authentication, limits,
    the trail and the monitor are taken away: the baseline of the overhead measurement.
    """
    from veil.serve import ModelCache, ServePolicy, shape  # noqa: PLC0415
    from veil.workspace import Workspace  # noqa: PLC0415

    policy = ServePolicy.load(home / "serve.yaml").for_model(model, key_id)
    served = ModelCache(Workspace(home)).get(model)

    def predict(records: list[dict[str, Any]]) -> Any:
        return shape(served.proba(served.encode(records)), served.classes, policy)

    return predict


async def _inprocess_run(spec: Mapping[str, Any]) -> Latency:
    predict = served_predictor(Path(spec["home"]), spec["model"], spec.get("key_id"))
    records = [spec["record"]]

    async def call() -> str:
        predict(records)
        return "200"

    for _ in range(PRIME):
        predict(records)
    latencies, statuses, span = await _schedule(
        call, spec["rate"], spec["seconds"], spec["warmup"], spec.get("drain", 30.0)
    )
    return Latency.of(spec["label"], spec["rate"], latencies, statuses, span)


def _child_main() -> None:
    """The generator's own process: read the spec from argv, print the result."""
    spec = json.loads(sys.argv[1])
    runner = _http_run if spec["mode"] == "http" else _inprocess_run
    try:
        import uvloop  # noqa: PLC0415 - the event loop uvicorn uses too, when installed

        result = uvloop.run(runner(spec))
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        result = asyncio.run(runner(spec))
    print(_MARK + json.dumps(result.__dict__), flush=True)  # noqa: T201 - the child's answer


def open_loop(spec: Mapping[str, Any], *, home: Path | None = None) -> Latency:
    """Run one open-loop measurement in a fresh interpreter and return its latencies.

    ``spec`` holds ``mode`` (``http`` or ``inprocess``), ``label``, ``rate``
    (requests/s), ``seconds`` (measured), ``warmup`` (seconds sent but not counted), and
    for ``http`` the ``url``, ``path``, ``token`` and JSON ``body``; for ``inprocess``
    the workspace ``home``, ``model`` and one ``record``.
    """
    if spec["rate"] <= 0 or spec["seconds"] <= 0:
        raise InvalidInputError(
            "an open-loop run needs a positive rate and duration",
            expected="rate > 0 requests/s, seconds > 0",
            got=f"rate={spec['rate']}, seconds={spec['seconds']}",
        )
    code = "from veil.bench._serve_load import _child_main; _child_main()"
    extra = {"VEIL_HOME": str(home)} if home is not None else {}
    limit = spec["warmup"] + spec["seconds"] + spec.get("drain", 30.0) + 120.0
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as errors:
        try:
            done = subprocess.run(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-c", code, json.dumps(dict(spec))],
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                encoding="utf-8",
                timeout=limit,
                check=False,
                env=child_environment(extra),
            )
        except subprocess.TimeoutExpired:
            raise UnavailableError(
                "the load generator did not finish",
                expected=f"an answer within {limit:.0f} s",
                got="a timeout",
                fix="lower --seconds or check the machine's load",
            ) from None
        errors.seek(0)
        stderr = errors.read()
    for line in done.stdout.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK) :])
            return Latency(**data)
    raise UnavailableError(
        "the load generator failed",
        expected="a result line from the child process",
        got=f"exit status {done.returncode}: {stderr[-800:]}",
    )


def post_json(
    client: Any, path: str, body: Mapping[str, Any], token: str
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` with a bearer key through an ``httpx.Client``; (status, JSON body)."""
    response = client.post(path, json=body, headers={"authorization": f"Bearer {token}"})
    try:
        data = response.json()
    except ValueError:
        data = {}
    return response.status_code, data if isinstance(data, dict) else {"value": data}


def error_code(status: int, body: Mapping[str, Any]) -> str:
    """``200`` for a success, else the error body's stable code (``http-<status>`` if none)."""
    if status < 300:  # noqa: PLR2004
        return str(status)
    error = body.get("error")
    if isinstance(error, dict) and error.get("code"):
        return str(error["code"])
    return f"http-{status}"


def hammer(
    url: str,
    jobs: Sequence[tuple[str, Mapping[str, Any], str]],
    *,
    clients: int,
    until: Callable[[str], bool] | None = None,
    seconds: float | None = None,
    timeout: float = 300.0,
) -> Counter[str]:
    """Send ``jobs`` (path, body, token) from ``clients`` concurrent connections.

    Client ``c`` sends ``jobs[c % len(jobs)]`` again and again until ``until(code)`` says
    stop for an answer's code, or ``seconds`` pass, or ``timeout`` (a bound on the whole
    run). Returns how many answers carried each code (``200``, ``budget_exceeded``,
    ``rate_limited``, ...).
    """
    return asyncio.run(
        _hammer(url, jobs, clients=clients, until=until, seconds=seconds, limit=timeout)
    )


async def _hammer(
    url: str,
    jobs: Sequence[tuple[str, Mapping[str, Any], str]],
    *,
    clients: int,
    until: Callable[[str], bool] | None,
    seconds: float | None,
    limit: float,
) -> Counter[str]:
    codes: Counter[str] = Counter()
    pool = _clients(url, clients, min(SOURCES, clients))
    try:
        stop_at = time.monotonic() + (seconds if seconds is not None else limit)
        hard_stop = time.monotonic() + limit

        async def worker(c: int) -> None:
            path, body, token = jobs[c % len(jobs)]
            client = pool[c % len(pool)]
            headers = {"authorization": f"Bearer {token}"}
            while time.monotonic() < min(stop_at, hard_stop):
                response = await client.post(path, json=body, headers=headers)
                try:
                    data = response.json()
                except ValueError:
                    data = {}
                code = error_code(response.status_code, data if isinstance(data, dict) else {})
                codes[code] += 1
                if until is not None and until(code):
                    return

        await asyncio.wait_for(
            asyncio.gather(*(worker(c) for c in range(clients))), timeout=limit + 30.0
        )
    finally:
        for client in pool:
            await client.aclose()
    return codes
