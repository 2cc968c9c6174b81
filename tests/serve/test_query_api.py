"""DP analytics over HTTP: datasets, queries through the one budget gate, budgets and history.

Every test talks to the gateway over real HTTP (``gateway`` in ``conftest.py``:
the sklearn digits dataset with a budget of epsilon 10, delta 1e-4, one DP
training release already charged, and a key per role) and then reads the
ledger and the trail directly, so what the service answers is checked against
what the workspace recorded.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest

from veil.access import Access, Outcome, Trail, parse_key

pytestmark = pytest.mark.xdist_group("serve")

DATASET = "digits"
COUNT = "SELECT COUNT(*) AS n FROM t"


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def _requests(gateway: Any) -> list[Any]:
    """The ``serve.request`` trail entries, once the spool has moved everything to the trail."""
    gateway.state.spool.flush()
    return Trail(gateway.state.store).entries(action="serve.request")


def _entry(gateway: Any, response: Any) -> Any:
    rid = response.headers["x-request-id"]
    return next(e for e in _requests(gateway) if e.details["request_id"] == rid)


def _events(gateway: Any) -> int:
    owner = Access(gateway.state.store, signing_key=gateway.state.signing_key)
    from veil.ledger import Ledger

    ledger = Ledger(gateway.state.store, key=gateway.state.ledger_key, access=owner)
    return ledger.status(DATASET, cross_check=False).events


def _query(client: Any, sql: str = COUNT, **body: Any) -> Any:
    return client.post(f"/v1/datasets/{DATASET}/query", json={"sql": sql, "epsilon": 0.5, **body})


# ---------------------------------------------------------------- datasets
@pytest.mark.slow
def test_datasets_list_and_schema_show_the_declared_contract_not_the_server(gateway):
    client = gateway.client("analyst")
    listed = client.get("/v1/datasets")
    assert listed.status_code == 200, listed.text
    (digits,) = [d for d in listed.json()["datasets"] if d["name"] == DATASET]
    assert digits["rows"] == 1797 and digits["columns"] == 65
    assert digits["privacy_unit"] is None and digits["one_row_per_person"] is True
    budget = digits["budget"]
    assert budget["budget"] == {"kind": "approx_dp", "epsilon": 10.0, "delta": 1e-4}
    assert budget["events"] == 1  # digits-lr's training
    assert 0 < budget["spent"]["epsilon"] < 10 and math.isclose(
        budget["remaining"], 10 - budget["spent"]["epsilon"]
    )

    shown = client.get(f"/v1/datasets/{DATASET}")
    assert shown.status_code == 200, shown.text
    detail = shown.json()
    schema = detail["privacy_schema"]
    columns = {c["name"]: c for c in schema["columns"]}
    assert columns["digit"]["categories"] == [str(d) for d in range(10)]
    assert columns["pixel_0_0"]["bounds"] == [0.0, 16.0]
    assert detail["rows"] == 1797 and len(detail["content_sha256"]) == 64
    # The operator's machine stays private: no source path, no registration report.
    assert str(gateway.home.parent) not in shown.text and "source" not in detail
    assert _entry(gateway, shown).dataset == DATASET


# ---------------------------------------------------------------- queries
@pytest.mark.slow
def test_a_query_is_charged_before_it_answers_and_its_entry_names_the_charge(gateway):
    client = gateway.client("analyst")
    sql = "SELECT digit, COUNT(*) AS n FROM digits WHERE pixel_0_2 >= 5 GROUP BY digit"
    response = _query(client, sql, purpose="class balance report")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == ["digit", "n"] and len(body["rows"]) == 10
    assert all(row["n"]["ci"] is not None for row in body["rows"])
    charged = body["charged"]
    assert charged["dataset"] == DATASET and charged["seq"] == 2  # after digits-lr's training
    assert body["budget"] == charged["budget"] and body["budget"]["events"] == 2
    assert math.isclose(
        body["budget"]["remaining"], 10 - body["budget"]["spent"]["epsilon"], rel_tol=1e-12
    )
    assert _events(gateway) == 2

    # The ledger's record, as the auditor reads it over HTTP: the same event, purpose and actor.
    auditor = gateway.client("auditor")
    history = auditor.get(f"/v1/datasets/{DATASET}/history").json()
    release = history["releases"][-1]
    assert release["id"] == charged["event_id"] and release["seq"] == 2
    assert release["purpose"] == "class balance report"
    assert release["actor"] == "svc:test-analyst"

    # The request's trail entry: the charge and the SQL's digest, never the SQL (it quotes data).
    entry = _entry(gateway, response)
    assert entry.outcome == Outcome.ALLOWED and entry.dataset == DATASET
    assert entry.purpose == "class balance report"
    assert entry.details["ledger_event"] == charged["event_id"]
    assert entry.details["sql_sha256"] == hashlib.sha256(sql.encode()).hexdigest()
    assert entry.details["epsilon"] == 0.5 and entry.details["route"].endswith("/query")
    assert "pixel_0_2" not in json.dumps(entry.details)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("SELEC COUNT(*) FROM t", ""),
        ("SELECT COUNT(*) FROM t; DROP TABLE t", ""),
        ("SELECT AVG(no_such_column) FROM t", "no_such_column"),
        ("SELECT COUNT(*) FROM other_table", "other_table"),
        ("SELECT pixel_0_0 FROM t", ""),
    ],
)
def test_malformed_sql_is_400_with_its_code_and_costs_nothing(gateway, sql, fragment):
    response = _query(gateway.client("analyst"), sql)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["code"] in {"invalid_input", "schema_error"}
    assert fragment in json.dumps(error)
    assert error["request_id"] == response.headers["x-request-id"]
    assert _events(gateway) == 1
    entry = _entry(gateway, response)
    assert entry.outcome == Outcome.REFUSED and entry.details["code"] == error["code"]
    assert "ledger_event" not in entry.details


@pytest.mark.slow
def test_a_query_over_the_budget_is_403_with_what_is_left_and_charges_nothing(gateway):
    client = gateway.client("analyst")
    left = client.get(f"/v1/datasets/{DATASET}/budget").json()["remaining"]
    response = _query(client, epsilon=left + 1.0)
    assert response.status_code == 403, response.text
    error = _error(response)
    assert error["code"] == "budget_exceeded"
    assert math.isclose(error["details"]["remaining"], left, rel_tol=1e-9)
    assert _events(gateway) == 1
    # What is left is still spendable: the refusal charged nothing.
    assert _query(client, epsilon=min(left / 2, 1.0)).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize(
    "body",
    [
        {"sql": COUNT, "epsilon": 0},
        {"sql": COUNT, "epsilon": -1},
        {"sql": COUNT, "epsilon": 1e6},
        {"sql": COUNT},
        {"sql": "", "epsilon": 0.5},
        {"sql": "x" * 10_001, "epsilon": 0.5},
        {"sql": COUNT, "epsilon": 0.5, "delta": 1.5},
        {"sql": COUNT, "epsilon": 0.5, "confidence": 1.0},
        {"sql": COUNT, "epsilon": 0.5, "mechanism": "exponential"},
        {"sql": COUNT, "epsilon": 0.5, "purpose": ""},
        {"sql": COUNT, "epsilon": 0.5, "epsilon_per_row": 1},
        {"sql": 42, "epsilon": 0.5},
        [COUNT, 0.5],
    ],
)
def test_bodies_outside_the_schema_are_refused_before_the_gate(gateway, body):
    response = gateway.client("analyst").post(f"/v1/datasets/{DATASET}/query", json=body)
    assert response.status_code == 422, response.text
    assert _error(response)["code"] == "invalid_input"
    assert _events(gateway) == 1


@pytest.mark.slow
def test_non_json_bodies_and_non_finite_numbers_are_refused(gateway):
    client = gateway.client("analyst")
    url = f"/v1/datasets/{DATASET}/query"
    plain = client.post(url, content=b"sql=SELECT", headers={"content-type": "text/plain"})
    assert plain.status_code == 422 and _error(plain)["code"] == "invalid_input"
    broken = client.post(url, content=b'{"sql": ', headers={"content-type": "application/json"})
    assert broken.status_code == 422
    nan = client.post(
        url,
        content=b'{"sql": "SELECT COUNT(*) FROM t", "epsilon": NaN}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422 and _error(nan)["code"] == "invalid_input"
    assert _events(gateway) == 1


@pytest.mark.slow
def test_gaussian_without_delta_and_an_unknown_dataset_are_clean_4xx(gateway):
    client = gateway.client("analyst")
    gaussian = _query(client, mechanism="gaussian")
    assert gaussian.status_code == 400 and _error(gaussian)["code"] == "invalid_input"
    missing = client.post("/v1/datasets/digitz/query", json={"sql": COUNT, "epsilon": 0.5})
    assert missing.status_code == 404
    error = _error(missing)
    assert error["code"] == "not_found" and "digits" in error["message"]  # did you mean
    assert client.get("/v1/datasets/digitz/budget").status_code == 404
    assert client.get("/v1/datasets/digitz/history").status_code == 404
    assert client.get("/v1/datasets/digitz").status_code == 404
    # A name the catalogue could never register is refused by its shape (the trail holds the
    # dataset's name, up to 128 characters): a 422, not a 503 from the trail.
    for name in ("0" * 129, "-digits", "dig%20its"):
        response = client.get(f"/v1/datasets/{name}/budget")
        assert response.status_code == 422 and _error(response)["code"] == "invalid_input"
    assert _events(gateway) == 1


# ---------------------------------------------------------------- roles
ROUTES = {
    "list": ("GET", "/v1/datasets"),
    "show": ("GET", f"/v1/datasets/{DATASET}"),
    "query": ("POST", f"/v1/datasets/{DATASET}/query"),
    "budget": ("GET", f"/v1/datasets/{DATASET}/budget"),
    "history": ("GET", f"/v1/datasets/{DATASET}/history"),
}
MAY = {
    "owner": set(ROUTES),
    "analyst": set(ROUTES),
    "auditor": {"list", "show", "budget", "history"},
    "consumer": set(),
}


def _call(client: Any, route: str) -> Any:
    method, path = ROUTES[route]
    body = {"sql": COUNT, "epsilon": 0.25} if method == "POST" else None
    return client.request(method, path, json=body)


@pytest.mark.slow
def test_each_role_reaches_exactly_its_routes_and_every_refusal_is_recorded(gateway):
    charged = 0
    for role, allowed in MAY.items():
        client = gateway.client(role)
        for route in ROUTES:
            response = _call(client, route)
            if route in allowed:
                assert response.status_code == 200, (role, route, response.text)
                charged += route == "query"
            else:
                assert response.status_code == 403, (role, route, response.text)
                assert _error(response)["code"] == "permission_denied", (role, route)
                entry = _entry(gateway, response)
                assert entry.outcome == Outcome.REFUSED and entry.actor == f"svc:test-{role}"
                assert entry.details["key_id"] == parse_key(gateway.keys[role])[0]
    assert _events(gateway) == 1 + charged == 3  # the owner's and the analyst's queries only
    refused = Trail(gateway.state.store).entries(action="serve:budget.spend")
    assert {e.actor for e in refused} == {"svc:test-auditor", "svc:test-consumer"}
    assert all(e.outcome == Outcome.REFUSED and e.dataset == DATASET for e in refused)


def _scoped_key(gateway: Any) -> str:
    """Register iris with a budget and make an analyst key scoped to it, as the owner."""
    from veil.data import Catalog
    from veil.ledger import Budget, Ledger

    state = gateway.state
    owner = state.operator
    catalog = Catalog(
        state.store, state.workspace.settings, access=owner, workspace=state.workspace
    )
    catalog.add("sklearn:iris", name="iris")
    Ledger(state.store, state.workspace.settings, key=state.ledger_key, access=owner).set_budget(
        "iris", Budget(epsilon=1.0), reason="test: a second dataset"
    )
    _, token = owner.create_key("iris-analyst", "analyst", "iris")
    return token


@pytest.mark.slow
def test_a_key_scoped_to_another_dataset_is_refused_here_and_served_there(gateway):
    client = gateway.client(token=_scoped_key(gateway))
    for route in ("show", "query", "budget", "history"):
        response = _call(client, route)
        assert response.status_code == 403, (route, response.text)
        assert _error(response)["details"]["dataset"] == DATASET
    assert _events(gateway) == 1
    iris = client.post("/v1/datasets/iris/query", json={"sql": COUNT, "epsilon": 0.5})
    assert iris.status_code == 200, iris.text
    assert iris.json()["budget"]["remaining"] == pytest.approx(0.5)
    assert client.get("/v1/datasets/iris/budget").json()["events"] == 1
    # The scoped key lists only the dataset it holds a role on.
    mine = client.get("/v1/datasets")
    assert mine.status_code == 200, mine.text
    assert [d["name"] for d in mine.json()["datasets"]] == ["iris"]
    # The workspace-wide analyst sees both datasets in the listing, each with its budget.
    listed = gateway.client("analyst").get("/v1/datasets").json()["datasets"]
    assert sorted(d["name"] for d in listed) == ["digits", "iris"]
    assert all(d["budget"] is not None for d in listed)


# ---------------------------------------------------------------- history
@pytest.mark.slow
def test_history_pages_by_seq_oldest_first_and_lists_budget_changes(gateway):
    client = gateway.client("analyst")
    for epsilon in (0.1, 0.2, 0.3):
        assert _query(client, epsilon=epsilon, purpose=f"run {epsilon}").status_code == 200
    auditor = gateway.client("auditor")
    url = f"/v1/datasets/{DATASET}/history"
    first = auditor.get(url, params={"limit": 2}).json()
    assert [r["seq"] for r in first["releases"]] == [1, 2]
    assert first["next_after"] == 2
    assert first["releases"][0]["operation"] != "query"  # digits-lr's training comes first
    second = auditor.get(url, params={"limit": 2, "after": first["next_after"]}).json()
    assert [r["seq"] for r in second["releases"]] == [3, 4]
    assert [r["purpose"] for r in second["releases"]] == ["run 0.2", "run 0.3"]
    assert second["next_after"] is None
    assert auditor.get(url, params={"after": 4}).json()["releases"] == []
    whole = auditor.get(url).json()
    assert [r["seq"] for r in whole["releases"]] == [1, 2, 3, 4] and whole["next_after"] is None
    (change,) = whole["budget_changes"]
    assert change["budget"] == {"kind": "approx_dp", "epsilon": 10.0, "delta": 1e-4}
    assert change == second["budget_changes"][0]
    for params in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"limit": "ten"}):
        response = auditor.get(url, params=params)
        assert response.status_code == 422 and _error(response)["code"] == "invalid_input"


@pytest.mark.slow
def test_budget_matches_the_ledger_after_queries(gateway):
    client = gateway.client("analyst")
    before = client.get(f"/v1/datasets/{DATASET}/budget").json()
    answered = _query(client, epsilon=1.0).json()
    after = client.get(f"/v1/datasets/{DATASET}/budget").json()
    assert after["events"] == before["events"] + 1 == 2
    assert after["spent"] == answered["budget"]["spent"]
    assert after["remaining"] < before["remaining"]
    assert after["accountant"] == before["accountant"]
    # The RDP figure is an independent (looser) bound on the same history; it can be skipped.
    assert after["cross_check"]["accountant"] == "rdp"
    assert after["cross_check"]["epsilon"] >= after["spent"]["epsilon"] * (1 - 1e-9)
    quick = client.get(f"/v1/datasets/{DATASET}/budget", params={"cross_check": "false"}).json()
    assert quick["cross_check"] == {} and quick["spent"] == after["spent"]
