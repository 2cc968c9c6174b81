"""`veil serve`: the checks it makes before any worker starts, and a real start and stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from veil.cli._app import main

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def ws(capsys) -> None:
    assert run(capsys, "init")[0] == 0


def test_check_prints_what_would_run(capsys, ws):
    code, out, _ = run(capsys, "serve", "--check", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["url"] == "http://127.0.0.1:8700"
    assert summary["limits"] == "in memory (one worker)"
    assert summary["policy"] == "built-in defaults"


def test_several_workers_without_postgres_and_redis_are_refused(capsys, ws):
    code, _, err = run(capsys, "serve", "--workers", "4", "--check")
    assert code == 3
    assert "VEIL_DATABASE_URL" in err and "VEIL_REDIS_URL" in err


def test_a_public_address_needs_allow_remote(capsys, ws):
    code, _, err = run(capsys, "serve", "--host", "0.0.0.0", "--check")  # noqa: S104
    assert code == 3 and "--allow-remote" in err


def test_a_bad_policy_names_its_line(capsys, ws, tmp_path: Path):
    policy = tmp_path / "p.yaml"
    policy.write_text("models:\n  m1:\n    output: everything\n", encoding="utf-8")
    code, _, err = run(capsys, "serve", "--check", "--policy", str(policy))
    assert code == 3
    assert "models.m1.output" in err


def test_a_missing_policy_file_is_not_found(capsys, ws, tmp_path: Path):
    code, _, _ = run(capsys, "serve", "--check", "--policy", str(tmp_path / "none.yaml"))
    assert code == 6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_serve_starts_answers_and_stops_on_sigterm(capsys, ws, tmp_path: Path):
    port = _free_port()
    veil = Path(sys.executable).with_name("veil")
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(veil), "serve", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=os.environ | {"VEIL_HOME": str(tmp_path / ".veil")},
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert ready.json()["ready"] is True
        refused = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
        assert refused.status_code == 401
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # graceful: drain, flush the spool, exit 0
        process.wait(timeout=60)
    # uvicorn shuts down cleanly, then re-raises the signal it caught (exit status -15).
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    request = next(line for line in lines if line.get("message") == "request")
    assert request["status"] == 401 and request["route"] == "/v1/models"
    assert not list((tmp_path / ".veil" / "serve" / "spool").glob("*.spool"))  # all flushed


def test_a_bad_ip_rate_is_refused_before_start(capsys, ws):
    code, _, err = run(capsys, "serve", "--check", "--ip-rate", "lots")
    assert code == 3 and "'lots' is not a rate limit" in err
