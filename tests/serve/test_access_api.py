"""``/v1/access``: grants and keys over real HTTP, checked and recorded by the access library.

Each test drives the gateway (``gateway`` in ``conftest.py``) with the keys of
the served workspace, then reads the workspace's trail: the library's own
entries (``access.grant``, ``access.revoke``, ``keys.revoke``) and the
gateway's ``serve.request`` entry of every request.
"""

from __future__ import annotations

from typing import Any

import pytest

from veil.access import Outcome, Trail, parse_key

pytestmark = [
    pytest.mark.xdist_group("serve"),
    pytest.mark.slow,
]  # slow tier (not in `make test-fast`): half a second to seconds a test

GRANTS = "/v1/access/grants"
REVOKE = "/v1/access/grants/revoke"
KEYS = "/v1/access/keys"


def _trail(gateway: Any, action: str) -> list[Any]:
    gateway.state.spool.flush()
    return Trail(gateway.state.store).entries(action=action)


def _requests(gateway: Any, route: str) -> list[Any]:
    return [e for e in _trail(gateway, "serve.request") if e.details.get("route") == route]


def _key_id(token: str) -> str:
    parsed = parse_key(token)
    assert parsed is not None
    return parsed[0]


def _new_key(gateway: Any, name: str, role: str, dataset: str | None = None) -> str:
    """A key made by the workspace's owner through the library (there is no HTTP route)."""
    _, token = gateway.state.operator.create_key(name, role, dataset)
    return token


def test_owner_grants_analyst_on_a_dataset_and_the_key_of_that_principal_uses_it(gateway):
    owner = gateway.client("owner")
    report = gateway.client(token=_new_key(gateway, "report", "analyst"))
    assert report.get("/v1/datasets/digits").status_code == 200  # this worker now holds its grants

    taken = owner.post(REVOKE, json={"principal": "svc:report", "role": "analyst"})
    assert taken.status_code == 200, taken.text
    assert taken.json() == {"revoked": {"principal": "svc:report", "role": "analyst", "scope": "*"}}
    refused = report.get("/v1/datasets/digits")  # at once in this worker, not after max_age
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"

    given = owner.post(
        GRANTS,
        json={"principal": "svc:report", "role": "analyst", "dataset": "digits", "reason": "q3"},
    )
    assert given.status_code == 200, given.text
    assert given.json() == {
        "granted": {"principal": "svc:report", "role": "analyst", "scope": "digits"}
    }
    assert report.get("/v1/datasets/digits").status_code == 200
    listed = owner.get(GRANTS, params={"principal": "svc:report"}).json()
    assert listed == {"grants": [{"principal": "svc:report", "role": "analyst", "scope": "digits"}]}

    granted = _trail(gateway, "access.grant")[-1]
    assert granted.actor == "svc:test-owner"
    assert granted.purpose == "q3"
    assert granted.dataset == "digits"
    assert granted.details["principal"] == "svc:report"
    assert granted.details["key_id"] == _key_id(gateway.keys["owner"])
    revoked = _trail(gateway, "access.revoke")[-1]
    assert (revoked.actor, revoked.details["principal"]) == ("svc:test-owner", "svc:report")
    posted = [e for e in _requests(gateway, GRANTS) if e.details["method"] == "POST"]
    assert [e.outcome for e in posted] == [Outcome.ALLOWED]
    assert posted[0].dataset == "digits"
    assert posted[0].details["change"] == "grant"
    assert posted[0].details["principal"] == "svc:report"
    assert _requests(gateway, REVOKE)[0].details["change"] == "revoke"


def test_a_revoked_key_is_refused_from_its_next_request(gateway):
    owner = gateway.client("owner")
    analyst = gateway.client("analyst")
    assert analyst.get("/v1/datasets").status_code == 200
    key_id = _key_id(gateway.keys["analyst"])

    response = owner.post(f"{KEYS}/{key_id}/revoke", json={"reason": "left the team"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["own_key"] is False
    assert body["key"]["key_id"] == key_id
    assert body["key"]["status"] == "revoked"
    assert body["key"]["revoked_at"] is not None

    refused = analyst.get("/v1/datasets")  # the same worker, well within Access.max_age
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"

    entry = _trail(gateway, "keys.revoke")[-1]
    assert entry.actor == "svc:test-owner"
    assert entry.purpose == "left the team"
    assert entry.details["key_id"] == key_id  # the revoked key's id, as the library records it
    request = _requests(gateway, "/v1/access/keys/{key_id}/revoke")[-1]
    assert request.outcome == Outcome.ALLOWED
    assert request.details["revoked_key"] == key_id
    assert request.details["key_id"] == _key_id(gateway.keys["owner"])  # who asked


def test_revoking_the_callers_own_key_is_allowed_and_signs_it_out(gateway):
    token = _new_key(gateway, "ops", "owner")
    ops = gateway.client(token=token)
    response = ops.post(f"{KEYS}/{_key_id(token)}/revoke", json={"reason": "rotating"})
    assert response.status_code == 200, response.text
    assert response.json()["own_key"] is True
    assert ops.get(KEYS).status_code == 401


def test_keys_are_listed_without_secrets_to_owners_and_auditors_only(gateway):
    for role in ("owner", "auditor"):
        response = gateway.client(role).get(KEYS)
        assert response.status_code == 200, response.text
        keys = response.json()["keys"]
        assert {k["principal"] for k in keys} >= {f"svc:test-{r}" for r in gateway.keys}
        assert all(
            set(k)
            == {
                "key_id",
                "principal",
                "scopes",
                "created_at",
                "created_by",
                "expires_at",
                "revoked_at",
                "status",
            }
            for k in keys
        )
        for token in gateway.keys.values():
            secret = token[len("veil_sk_") + 13 :]  # after veil_sk_<12 hex>_; it may hold "_"
            assert len(secret) == 43
            assert secret not in response.text
        assert "scrypt" not in response.text
    for role in ("analyst", "consumer"):
        response = gateway.client(role).get(KEYS)
        assert response.status_code == 403
        assert response.json()["error"]["details"]["missing"] == "access.read"
    auditor_grants = gateway.client("auditor").get(GRANTS)
    assert auditor_grants.status_code == 200
    assert {"principal": "svc:test-auditor", "role": "auditor", "scope": "*"} in (
        auditor_grants.json()["grants"]
    )


@pytest.mark.parametrize("route", [GRANTS, REVOKE])
def test_an_analyst_cannot_grant_or_revoke_and_nothing_changes(gateway, route):
    owner = gateway.client("owner")
    before = owner.get(GRANTS).json()
    analyst = gateway.client("analyst")
    for body in (
        {"principal": "svc:test-analyst", "role": "owner"},
        {"principal": "svc:test-analyst", "role": "owner", "dataset": "digits"},
        {"principal": "svc:test-consumer", "role": "consumer"},
    ):
        response = analyst.post(route, json=body)
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["code"] == "permission_denied"
        assert error["details"]["missing"] == "access.manage"
        assert "veil access grant svc:test-analyst owner" in error["fix"]
    assert owner.get(GRANTS).json() == before
    assert _trail(gateway, "access.grant") == []
    assert _trail(gateway, "access.revoke") == []
    refusals = _trail(gateway, "serve:access.manage")
    assert len(refusals) == 3
    assert {e.outcome for e in refusals} == {Outcome.REFUSED}
    assert {e.actor for e in refusals} == {"svc:test-analyst"}
    requests = [e for e in _requests(gateway, route) if e.details["method"] == "POST"]
    assert [(e.outcome, e.details["status"]) for e in requests] == [(Outcome.REFUSED, 403)] * 3


def test_an_unknown_role_is_a_422_that_lists_the_roles(gateway):
    owner = gateway.client("owner")
    for route in (GRANTS, REVOKE):
        response = owner.post(route, json={"principal": "svc:report", "role": "admin"})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        for role in ("owner", "analyst", "auditor", "consumer"):
            assert role in error["got"]
    assert _trail(gateway, "access.grant") == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"principal": "svc:Bad Name", "role": "analyst"}, 400, "invalid_input"),
        ({"principal": "svc:report", "role": "analyst", "dataset": "../x"}, 422, "invalid_input"),
        ({"principal": "svc:report", "role": "analyst", "extra": 1}, 422, "invalid_input"),
        ({"role": "analyst"}, 422, "invalid_input"),
    ],
)
def test_bad_grant_bodies_are_refused_with_a_clear_4xx(gateway, body, status, code):
    response = gateway.client("owner").post(GRANTS, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["expected"] and error["got"]


def test_unknown_grants_and_keys_are_404_and_malformed_key_ids_422(gateway):
    owner = gateway.client("owner")
    missing = owner.post(REVOKE, json={"principal": "svc:nobody", "role": "auditor"})
    assert missing.status_code == 404
    assert "svc:nobody holds no auditor grant" in missing.json()["error"]["message"]
    unknown = owner.post(f"{KEYS}/000000000000/revoke", json={"reason": "x"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "no service key '000000000000'"
    assert owner.post(f"{KEYS}/not-a-key!/revoke").status_code == 422


def test_the_last_owner_of_the_workspace_cannot_be_revoked(gateway):
    owner = gateway.client("owner")
    person = gateway.state.operator.principal.name  # the account that ran `veil init`
    owners = [
        g for g in owner.get(GRANTS).json()["grants"] if (g["role"], g["scope"]) == ("owner", "*")
    ]
    assert {g["principal"] for g in owners} == {person, "svc:test-owner"}

    first = owner.post(REVOKE, json={"principal": person, "role": "owner"})
    assert first.status_code == 200, first.text
    last = owner.post(REVOKE, json={"principal": "svc:test-owner", "role": "owner"})
    assert last.status_code == 409
    error = last.json()["error"]
    assert error["code"] == "conflict"
    assert error["message"] == "the workspace would have no owner"
    assert error["fix"] == "grant owner to someone else, then revoke"
    after = owner.get(GRANTS, params={"principal": "svc:test-owner"})
    assert after.status_code == 200  # still an owner, still answered
    assert {"principal": "svc:test-owner", "role": "owner", "scope": "*"} in after.json()["grants"]


def test_a_dataset_owner_manages_that_dataset_only(gateway):
    token = _new_key(gateway, "digits-owner", "owner", "digits")
    steward = gateway.client(token=token)
    given = steward.post(
        GRANTS, json={"principal": "svc:report", "role": "analyst", "dataset": "digits"}
    )
    assert given.status_code == 200, given.text
    workspace = steward.post(GRANTS, json={"principal": "svc:report", "role": "analyst"})
    assert workspace.status_code == 403
    assert workspace.json()["error"]["details"]["missing"] == "access.manage"
    assert steward.get(GRANTS, params={"dataset": "digits"}).status_code == 200
    assert steward.get(KEYS).status_code == 403  # keys are listed on the workspace only
    owner_key = _key_id(gateway.keys["owner"])  # a workspace key: not this steward's to revoke
    assert steward.post(f"{KEYS}/{owner_key}/revoke").status_code == 403
    assert gateway.client("owner").get(KEYS).status_code == 200


def test_no_route_creates_a_key(gateway):
    owner = gateway.client("owner")
    made = owner.post(KEYS, json={"name": "web", "role": "owner"})
    assert made.status_code == 405
    assert made.json()["error"]["code"] == "method_not_allowed"
    paths = owner.get("/openapi.json").json()["paths"]
    assert set(paths[KEYS]) == {"get"}
    assert [p for p in paths if p.startswith("/v1/access")] == [
        GRANTS,
        REVOKE,
        KEYS,
        f"{KEYS}/{{key_id}}/revoke",
    ]
    assert _trail(gateway, "keys.create")[-1].details["principal"] == "svc:test-consumer"
