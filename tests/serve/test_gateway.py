"""The gateway's own guarantees: keys, roles, the body limit, and one trail entry per request.

Each test plays an outsider or a lesser insider against the gateway over real
HTTP (``gateway`` in ``conftest.py``) and then reads the workspace's trail.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from veil.access import Access, Outcome, Permission, Trail, parse_key

pytestmark = [
    pytest.mark.xdist_group("serve"),
    pytest.mark.slow,
]  # slow tier (not in `make test-fast`): half a second to seconds a test


def _requests(gateway: Any) -> list[Any]:
    """The ``serve.request`` entries, once the spool has moved everything to the trail."""
    gateway.state.spool.flush()
    return Trail(gateway.state.store).entries(action="serve.request")


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def test_every_v1_route_declares_its_permission(gateway):
    from fastapi.routing import APIRoute

    from veil.serve._app import routers

    routes = [
        r
        for router in routers()
        for r in router.routes
        if isinstance(r, APIRoute) and r.path.startswith("/v1")
    ]
    assert routes, "no /v1 routes"
    undeclared = [
        r.path
        for r in routes
        if not any(hasattr(d.call, "veil_permission") for d in r.dependant.dependencies)
    ]
    assert undeclared == []
    schema = gateway.client().get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, operation in operations.items():
            assert Permission(operation["x-veil-permission"]), (method, path)
            assert operation["x-veil-roles"], (method, path)


def test_no_key_malformed_and_unknown_keys_are_401_and_on_the_trail(gateway):
    anonymous = gateway.client()
    response = anonymous.get("/v1/models")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert _error(response)["code"] == "unauthenticated"
    rid = response.headers["x-request-id"]
    assert _error(response)["request_id"] == rid

    assert gateway.client(token="not-a-key").get("/v1/models").status_code == 401  # noqa: S106
    key_id = parse_key(gateway.keys["analyst"])[0]
    forged = f"veil_sk_{key_id}_" + "A" * 43
    response = gateway.client(token=forged).get("/v1/models")
    assert response.status_code == 401
    assert "secret" not in response.text.lower() or forged not in response.text

    entries = _requests(gateway)
    by_id = {e.details["request_id"]: e for e in entries}
    first = by_id[rid]
    assert first.outcome == Outcome.REFUSED
    assert first.actor == "anonymous"
    assert first.details["status"] == 401 and first.details["code"] == "unauthenticated"
    assert first.details["route"] == "/v1/models"
    assert len(entries) == 3
    assert all(e.details["status"] == 401 for e in entries)
    refusals = Trail(gateway.state.store).entries(action="key.use")
    assert any(e.details.get("key_id") == key_id for e in refusals)  # forged secret, real id


def test_a_lesser_role_is_403_and_recorded(gateway):
    response = gateway.client("consumer").get("/v1/datasets/digits/history")
    assert response.status_code == 403
    error = _error(response)
    assert error["code"] == "permission_denied"
    assert "ledger.read" in error["expected"] or "ledger.read" in error["message"]
    entry = next(e for e in _requests(gateway) if e.details["status"] == 403)
    assert entry.actor == "svc:test-consumer" and entry.outcome == Outcome.REFUSED
    assert entry.details["key_id"] == parse_key(gateway.keys["consumer"])[0]


def test_a_revoked_key_is_refused_within_seconds(gateway):
    client = gateway.client("analyst")
    assert client.get("/v1/models").status_code == 200
    key_id = parse_key(gateway.keys["analyst"])[0]
    owner = Access(gateway.state.store, signing_key=gateway.state.signing_key)
    owner.revoke_key(key_id, reason="test: leaked")
    deadline = time.monotonic() + 10
    status = 200
    while time.monotonic() < deadline:
        status = client.get("/v1/models").status_code
        if status == 401:
            break
        time.sleep(0.2)
    assert status == 401


def test_an_expired_key_is_refused(gateway):
    owner = Access(gateway.state.store, signing_key=gateway.state.signing_key)
    _, token = owner.create_key("short", "analyst", expires_in=timedelta(seconds=1))
    client = gateway.client(token=token)
    assert client.get("/v1/models").status_code == 200
    time.sleep(1.3)
    response = client.get("/v1/models")
    assert response.status_code == 401
    assert "expired" in _error(response)["got"]


def test_bodies_over_the_limit_are_413_with_or_without_a_declared_length(start_gateway):
    gateway = start_gateway(max_body_bytes=2048)
    client = gateway.client("analyst")
    big = b'{"records": [' + b"1," * 4000 + b"1]}"
    response = client.post(
        "/v1/models/digits-lr/predict", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert _error(response)["code"] == "data_too_large"

    def chunks():
        for _ in range(10):
            yield b" " * 1000

    response = client.post(
        "/v1/models/digits-lr/predict",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert [e.details["status"] for e in _requests(gateway)] == [413, 413]


def test_unknown_routes_and_methods_get_the_error_shape(gateway):
    client = gateway.client("analyst")
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404 and _error(response)["code"] == "not_found"
    response = client.delete("/healthz")
    assert response.status_code == 405 and "code" in _error(response)


def test_health_and_readiness_need_no_key_and_leave_no_entry(gateway):
    client = gateway.client()
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert _requests(gateway) == []


def test_requests_land_on_a_valid_trail_and_a_stop_loses_none(gateway):
    client = gateway.client("analyst")
    ids = [client.get("/v1/models").headers["x-request-id"] for _ in range(25)]
    gateway.stop()  # graceful: the lifespan flushes the spool
    trail = Trail(gateway.state.store)
    recorded = {e.details["request_id"] for e in trail.entries(action="serve.request")}
    assert set(ids) <= recorded
    assert trail.verify().ok


def test_a_flood_before_authentication_is_counted_not_recorded_one_by_one(start_gateway):
    gateway = start_gateway(ip_rate="5/minute")
    anonymous = gateway.client()
    statuses = [anonymous.get("/v1/models").status_code for _ in range(30)]
    assert statuses.count(401) == 5 and statuses.count(429) == 25
    assert len(_requests(gateway)) == 6  # five 401s, and the first 429 standing for itself
    gateway.stop()
    entries = Trail(gateway.state.store).entries(action="serve.request")
    flood = [e.details["flood_refusals"] for e in entries if "flood_refusals" in e.details]
    assert flood == [1, 24]  # every refused request is counted on the trail
    assert all(e.details.get("client") == "127.0.0.1" for e in entries[5:])


def test_a_body_too_deep_to_parse_is_422_invalid_input(gateway):
    client = gateway.client("consumer")
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = client.post(
        "/v1/models/digits-lr/predict", content=deep, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "invalid_input" and "well-formed JSON" in error["expected"]
