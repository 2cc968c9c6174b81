"""The trail over HTTP (real uvicorn): search pages, entries, proofs, status and verification.

An auditor pages the trail newest first, reads an entry whose leaf hash is its
body's, gets an inclusion proof that the standalone verifier accepts with the
workspace's key, and runs a full verification whose result is recorded on the
trail. Outsiders (a consumer's key, an analyst's, no key) are refused, and bad
input (a seq that does not exist, a huge page, a bad date) gets a 4xx that
says what was expected.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from veil.access.verifier import leaf_hash, verify_inclusion_proof
from veil.store.tables import TrailEntryRow

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_an_auditor_pages_the_trail_newest_first(gateway: Any) -> None:
    client = gateway.client("auditor")
    first = client.get("/v1/trail", params={"limit": 5})
    assert first.status_code == 200, first.text
    page = first.json()
    seqs = [e["seq"] for e in page["entries"]]
    assert len(seqs) == 5
    assert seqs == sorted(seqs, reverse=True)
    assert page["next_before"] == seqs[-1]
    second = client.get("/v1/trail", params={"limit": 5, "before": page["next_before"]}).json()
    assert [e["seq"] for e in second["entries"]] == list(range(seqs[-1] - 1, seqs[-1] - 6, -1))
    # A filter keeps only matching entries (an action seen on the first pages).
    action = page["entries"][0]["action"]
    filtered = client.get("/v1/trail", params={"action": action, "limit": 200}).json()
    assert filtered["entries"]
    assert {e["action"] for e in filtered["entries"]} == {action}
    assert filtered["filters"] == {"action": action}
    prefix = action.split(".")[0] + "."
    by_prefix = client.get("/v1/trail", params={"action": prefix, "limit": 200}).json()
    assert all(e["action"].startswith(prefix) for e in by_prefix["entries"])
    assert len(by_prefix["entries"]) >= len(filtered["entries"])
    refused = client.get("/v1/trail", params={"outcome": "refused"}).json()
    assert all(e["outcome"] == "refused" for e in refused["entries"])


def test_an_entry_and_its_proof_verify_with_the_workspace_key(gateway: Any) -> None:
    client = gateway.client("auditor")
    status = client.get("/v1/trail/status").json()
    size = status["size"]
    assert size > 3
    key = bytes.fromhex(status["public_key"])
    for seq in (1, size // 2, size):
        entry = client.get(f"/v1/trail/{seq}")
        assert entry.status_code == 200, entry.text
        body = entry.json()
        assert body["seq"] == seq
        assert leaf_hash(body["body"].encode("ascii")).hex() == body["leaf"]
        proof = client.get(f"/v1/trail/{seq}/proof")
        assert proof.status_code == 200, proof.text
        document = proof.json()
        assert document["format"] == "veil-trail-proof/v1"
        assert document["entry"]["body"] == body["body"]
        assert verify_inclusion_proof(document, key)
        assert not verify_inclusion_proof(document, bytes(32))  # and with no other key
    # The proof signed a head covering the newest entry: the status shows it, checked.
    signed = client.get("/v1/trail/status").json()["signed_head"]
    assert signed["size"] >= size
    assert signed["signature_valid"] is True
    assert signed["problem"] is None


def test_a_verification_runs_in_the_background_and_is_recorded(gateway: Any) -> None:
    client = gateway.client("auditor")
    started = client.post("/v1/trail/verify")
    assert started.status_code == 202, started.text
    job = started.json()["verification"]
    assert job["actor"] == "svc:test-auditor"
    deadline = time.monotonic() + 60
    while True:
        status = client.get("/v1/trail/status").json()
        if status["running"]["state"] != "running":
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["running"]["number"] == job["number"]
    assert status["running"]["state"] == "done"
    result = status["running"]["result"]
    assert result["ok"] is True
    assert result["problems"] == 0
    last = status["last_verification"]
    assert last["seq"] == result["seq"]
    assert last["ok"] is True
    assert last["actor"] == "svc:test-auditor"
    assert last["size"] == result["size"] > 0
    entry = client.get(f"/v1/trail/{last['seq']}").json()
    assert entry["action"] == "trail.verify"
    # An owner may verify too.
    assert gateway.client("owner").post("/v1/trail/verify").status_code == 202


def _verified(client: Any) -> dict[str, Any]:
    """Start a verification and wait for it; the status at its end."""
    assert client.post("/v1/trail/verify").status_code == 202
    deadline = time.monotonic() + 60
    while True:
        status: dict[str, Any] = client.get("/v1/trail/status").json()
        if status["running"]["state"] != "running":
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def test_a_verification_finds_an_edited_entry(gateway: Any) -> None:
    client = gateway.client("auditor")
    assert _verified(client)["last_verification"]["ok"] is True
    with gateway.state.store.session() as session:
        edited = session.execute(
            update(TrailEntryRow).where(TrailEntryRow.seq == 2).values(actor="someone-else")
        )
        assert edited.rowcount == 1
    status = _verified(client)
    last = status["last_verification"]
    assert last["ok"] is False
    assert last["problems"] >= 1
    assert last["first_problems"][0]["seq"] == 2
    assert last["first_problems"][0]["message"]


@pytest.mark.parametrize("role", ["consumer", "analyst"])
def test_keys_without_trail_read_are_refused(gateway: Any, role: str) -> None:
    client = gateway.client(role)
    for method, path in [
        ("GET", "/v1/trail"),
        ("GET", "/v1/trail/1"),
        ("GET", "/v1/trail/1/proof"),
        ("GET", "/v1/trail/status"),
        ("POST", "/v1/trail/verify"),
    ]:
        error = _error(client.request(method, path), 403)
        assert error["code"] == "permission_denied"
        assert "trail.read" in error["message"] + str(error["expected"])
    assert _error(gateway.client().get("/v1/trail"), 401)["code"] == "unauthenticated"


def test_bad_input_is_a_clear_4xx(gateway: Any) -> None:
    client = gateway.client("auditor")
    size = client.get("/v1/trail/status").json()["size"]
    for path in (f"/v1/trail/{size + 1000}", f"/v1/trail/{size + 1000}/proof"):
        missing = _error(client.get(path), 404)
        assert missing["code"] == "not_found"
        assert missing["got"] == str(size + 1000)
        assert "1 to" in missing["expected"]
        assert missing["fix"]
    for path, params in [
        ("/v1/trail/0", {}),
        ("/v1/trail/-3", {}),
        ("/v1/trail/abc", {}),
        (f"/v1/trail/{2**70}", {}),
        ("/v1/trail", {"limit": 100000}),
        ("/v1/trail", {"limit": 0}),
        ("/v1/trail", {"before": -1}),
        ("/v1/trail", {"since": "yesterday"}),
        ("/v1/trail", {"until": "2026-13-45"}),
        ("/v1/trail", {"outcome": "maybe"}),
        ("/v1/trail", {"actor": "x" * 1000}),
    ]:
        error = _error(client.get(path, params=params), 422)
        assert error["code"] == "invalid_input"
        assert error["got"] and error["expected"] and error["fix"]
    dates = _error(client.get("/v1/trail", params={"since": "yesterday"}), 422)
    assert "since" in dates["got"]
    # A dataset filter the trail's dataset column cannot hold is answered and recorded
    # (schema fuzzing found a 503 "could not be recorded" for an empty one).
    for odd in ("", "x" * 128 + "\x02", "\x00"):
        assert client.get("/v1/trail", params={"dataset": odd}).status_code in (200, 422), odd
    assert client.get("/v1/trail", params={"dataset": ""}).status_code == 200
    # A valid time that cannot be moved to UTC (found by schema fuzzing as a 500).
    edge = _error(client.get("/v1/trail", params={"since": "0001-01-01T00:00:00+05:00"}), 400)
    assert edge["code"] == "invalid_input" and "outside the range" in edge["message"]


def test_serve_md_lists_the_trail_routes_with_the_permission_and_roles_they_check(
    gateway: Any,
) -> None:
    """docs/serve.md's permissions table says what each trail route checks, as OpenAPI does."""
    docs = (Path(__file__).parents[2] / "docs" / "serve.md").read_text(encoding="utf-8")
    operations = gateway.app.openapi()["paths"]
    for method, route in [
        ("GET", "/v1/trail"),
        ("GET", "/v1/trail/status"),
        ("POST", "/v1/trail/verify"),
        ("GET", "/v1/trail/{seq}"),
        ("GET", "/v1/trail/{seq}/proof"),
    ]:
        row = next(line for line in docs.splitlines() if f"| {method} | `{route}` |" in line)
        cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
        operation = operations[route][method.lower()]
        assert cells[2] == operation["x-veil-permission"] == "trail.read", row
        assert sorted(cells[3].split(", ")) == operation["x-veil-roles"], row


def test_a_second_verification_request_gets_the_running_one(gateway: Any) -> None:
    """One verification at a time per worker: while one runs, a request joins it."""
    from veil.serve._trail_routes import Verification, _Verifier

    verifier = _Verifier()
    running = Verification(7, "svc:someone", "2026-12-06T00:00:00Z")
    verifier.current = running
    job, started = verifier.start(gateway.state.operator)
    assert job is running
    assert started is False
    running.state = "done"  # once it has ended, a request starts a new one
    job, started = verifier.start(gateway.state.operator)
    assert started is True
    assert job.number == 1
    deadline = time.monotonic() + 60
    while job.to_dict()["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job.to_dict()["result"]["ok"] is True
