"""The ledger over real HTTP: paged, filtered history; setting a budget; the burn-down.

The gateway serves the digits workspace (a budget of epsilon 10 at delta 1e-4,
one DP training release) on a real port; every expectation is read back from
the ledger through the library, not from the route's own answer.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from veil.access import Access, Outcome, Trail
from veil.ledger import Ledger, Mechanism, PrivacyEvent

pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.slow]

DATASET = "digits"
HISTORY = f"/v1/datasets/{DATASET}/history"
BUDGET = f"/v1/datasets/{DATASET}/budget"
BURNDOWN = f"/v1/datasets/{DATASET}/burndown"
COUNT = "SELECT COUNT(*) AS n FROM t"
CONSENT = {"purpose": "research", "persons_excluded": 2, "rows_excluded": 5, "as_of": 3}


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def _owner_ledger(gateway: Any) -> Ledger:
    owner = Access(gateway.state.store, signing_key=gateway.state.signing_key)
    return Ledger(gateway.state.store, key=gateway.state.ledger_key, access=owner)


def _query(client: Any, purpose: str, epsilon: float = 0.1) -> None:
    body = {"sql": COUNT, "epsilon": epsilon, "purpose": purpose}
    response = client.post(f"/v1/datasets/{DATASET}/query", json=body)
    assert response.status_code == 200, response.text


def _walk(client: Any, params: dict[str, Any], *, forward: bool) -> list[dict[str, Any]]:
    pages = []
    key = {"after": 0} if forward else {"before": 2**40}
    while True:
        response = client.get(HISTORY, params={**params, **key})
        assert response.status_code == 200, response.text
        pages.append(response.json())
        nxt = pages[-1]["next_after" if forward else "next_before"]
        if nxt is None:
            return pages
        key = {"after": nxt} if forward else {"before": nxt}
        assert len(pages) < 50


def test_history_pages_each_filter_in_both_directions(gateway):
    analyst, owner, auditor = (gateway.client(r) for r in ("analyst", "owner", "auditor"))
    for i in range(4):
        _query(analyst, f"weekly report {i}")
    _query(owner, "ad-hoc check")
    _query(analyst, "weekly report 5")
    entries = _owner_ledger(gateway).entries(DATASET)
    assert len(entries) == 7  # digits-lr's training, then six queries
    middle = entries[3].created_at
    noise = entries[1].mechanisms[0].name  # a count's noise: discrete_laplace

    def names(entry: Any) -> set[str]:
        return {m.name for m in entry.mechanisms}

    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({}, [1, 2, 3, 4, 5, 6, 7]),
        ({"actor": "svc:test-analyst"}, [2, 3, 4, 5, 7]),
        ({"actor": "svc:test-owner", "operation": "query"}, [6]),
        ({"operation": "training"}, [1]),
        ({"purpose": "WEEKLY"}, [2, 3, 4, 5, 7]),
        ({"mechanism": noise}, [e.seq for e in entries if noise in names(e)]),
        ({"mechanism": "poisson_subsampled_gaussian"}, [1]),
        ({"mechanism": "laplace" if noise != "laplace" else "gaussian"}, []),
        ({"since": middle.isoformat()}, [4, 5, 6, 7]),
        ({"until": middle.isoformat()}, [1, 2, 3]),
        ({"since": middle.replace(tzinfo=None).isoformat(), "purpose": "weekly"}, [4, 5, 7]),
    ]
    assert cases[5][1] == [2, 3, 4, 5, 6, 7]
    for params, expected in cases:
        for limit in (2, 100):
            query = {**params, "limit": limit}
            forward = _walk(auditor, query, forward=True)
            assert [r["seq"] for p in forward for r in p["releases"]] == expected, params
            backward = _walk(auditor, query, forward=False)
            assert [r["seq"] for p in backward for r in p["releases"]] == expected[::-1]
            counted = None if params else len(expected)
            assert {p["total"] for p in forward + backward} == {counted}
            assert {p["order"] for p in forward} == {"asc"}
            assert {p["order"] for p in backward} == {"desc"}
    # The records are the ledger's, in the shape `veil budget history` gives them.
    page = auditor.get(HISTORY, params={"operation": "training"}).json()
    assert page["releases"] == [entries[0].to_dict()]
    assert page["filters"]["operation"] == "training" and page["filters"]["actor"] is None
    (change,) = page["budget_changes"]
    assert change["budget"] == {"kind": "approx_dp", "epsilon": 10.0, "delta": 1e-4}
    bad = [
        {"before": 0},
        {"after": -1},
        {"since": "last tuesday"},
        {"limit": 1001},
        {"mechanism": "x" * 65},
    ]
    for params in bad:
        response = auditor.get(HISTORY, params=params)
        assert response.status_code == 422, (params, response.text)
        assert _error(response)["code"] == "invalid_input"
    earlier = (middle - timedelta(days=1)).isoformat()
    for params in ({"after": 1, "before": 5}, {"since": middle.isoformat(), "until": earlier}):
        response = auditor.get(HISTORY, params=params)
        assert response.status_code == 400, response.text
        assert _error(response)["fix"]


def test_consent_counts_are_hidden_from_an_analyst_and_shown_to_an_auditor(gateway):
    ledger = _owner_ledger(gateway)
    event = PrivacyEvent(
        "count(*) with consent",
        (Mechanism.laplace(scale=10.0, sensitivity=1.0),),
        details={"consent": dict(CONSENT)},
    )
    seq = ledger.charge(DATASET, event, purpose="consented research").seq
    params = {"after": seq - 1}
    (seen,) = gateway.client("analyst").get(HISTORY, params=params).json()["releases"]
    consent = seen["details"]["consent"]
    assert consent["persons_excluded"] is None and consent["rows_excluded"] is None
    assert consent["counts"] == "hidden: needs consent.read" and consent["as_of"] == 3
    (full,) = gateway.client("auditor").get(HISTORY, params=params).json()["releases"]
    assert full["details"]["consent"] == CONSENT


def test_roles_history_and_burndown_need_ledger_read_and_budget_needs_budget_set(gateway):
    consumer = gateway.client("consumer")
    for url in (HISTORY, BURNDOWN):
        response = consumer.get(url)
        assert response.status_code == 403, response.text
        assert _error(response)["details"]["missing"] == "ledger.read"
    before = gateway.client("owner").get(BUDGET).json()
    for role in ("analyst", "auditor", "consumer"):
        response = gateway.client(role).put(
            BUDGET, json={"epsilon": 1000.0, "delta": 1e-6, "reason": "more, please"}
        )
        assert response.status_code == 403, (role, response.text)
        assert _error(response)["details"]["missing"] == "budget.set"
    after = gateway.client("owner").get(BUDGET).json()
    assert after == before and after["budget"]["epsilon"] == 10.0
    assert len(_owner_ledger(gateway).budget_changes(DATASET)) == 1
    refused = Trail(gateway.state.store).entries(action="serve:budget.set")
    assert {e.actor for e in refused} == {
        f"svc:test-{r}" for r in ("analyst", "auditor", "consumer")
    }
    assert all(e.outcome == Outcome.REFUSED for e in refused)


def test_the_owner_sets_the_budget_and_bad_numbers_are_422(gateway):
    owner = gateway.client("owner")
    response = owner.put(BUDGET, json={"epsilon": 12.5, "delta": 1e-5, "reason": "Q4 approved"})
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["budget"] == {"kind": "approx_dp", "epsilon": 12.5, "delta": 1e-5}
    assert shown == owner.get(BUDGET).json()
    status = _owner_ledger(gateway).status(DATASET)
    assert status.budget is not None and status.budget.epsilon == 12.5
    changes = owner.get(HISTORY).json()["budget_changes"]
    assert [c["reason"] for c in changes][-1] == "Q4 approved" and len(changes) == 2
    assert changes[-1]["actor"] == "svc:test-owner"
    (entry,) = Trail(gateway.state.store).entries(action="budget.set", actor="svc:test-owner")
    assert entry.details["budget"]["epsilon"] == 12.5
    assert entry.details["previous"]["epsilon"] == 10.0
    bad = [
        {"epsilon": -1, "reason": "x"},
        {"epsilon": 0, "reason": "x"},
        {"epsilon": "5", "reason": "x"},
        {"epsilon": True, "reason": "x"},
        {"epsilon": 5, "delta": 1, "reason": "x"},
        {"epsilon": 5, "delta": -1e-9, "reason": "x"},
        {"delta": 1e-6, "reason": "x"},
        {"epsilon": 5, "reason": "x", "rho": 1},
        {"epsilon": 5, "reason": "x" * 501},
    ]
    for body in bad:
        response = owner.put(BUDGET, json=body)
        assert response.status_code == 422, (body, response.text)
        error = _error(response)
        assert error["code"] == "invalid_input" and error["got"], body
    for raw in (b'{"epsilon": NaN, "reason": "x"}', b'{"epsilon": Infinity, "reason": "x"}'):
        response = owner.put(BUDGET, content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
    # The library's own rules: a change needs a reason; delta must stay below 1 / n.
    response = owner.put(BUDGET, json={"epsilon": 11.0, "delta": 1e-5})
    assert response.status_code == 400 and "needs a reason" in _error(response)["message"]
    response = owner.put(BUDGET, json={"epsilon": 11.0, "delta": 0.01, "reason": "too big"})
    assert response.status_code == 400, response.text
    assert "1 / 1,797" in _error(response)["expected"]
    assert _owner_ledger(gateway).status(DATASET).budget.epsilon == 12.5  # nothing changed


def test_a_budget_below_the_spend_is_set_and_then_refuses_every_release(gateway):
    owner = gateway.client("owner")
    spent = owner.get(BUDGET).json()["spent"]["epsilon"]
    assert spent > 1.0  # digits-lr's training
    response = owner.put(BUDGET, json={"epsilon": 1.0, "delta": 1e-4, "reason": "cut"})
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["budget"]["epsilon"] == 1.0 and shown["remaining"] == 0.0
    assert shown["spent"]["epsilon"] == spent
    events = shown["events"]
    body = {"sql": COUNT, "epsilon": 0.01}
    refused = gateway.client("analyst").post(f"/v1/datasets/{DATASET}/query", json=body)
    assert refused.status_code == 403 and _error(refused)["code"] == "budget_exceeded"
    assert _error(refused)["details"]["remaining"] == 0.0
    assert owner.get(BUDGET).json()["events"] == events


def test_the_burndown_ends_at_the_budgets_spend_and_its_rdp_cross_check(gateway):
    analyst = gateway.client("analyst")
    for i in range(5):
        _query(analyst, f"run {i}", epsilon=0.05 * (i + 1))
    burn = analyst.get(BURNDOWN, params={"points": 3})
    assert burn.status_code == 200, burn.text
    shown = burn.json()
    status = analyst.get(BUDGET).json()
    assert shown["events"] == status["events"] == 6
    seqs = [p["seq"] for p in shown["points"]]
    assert seqs[0] == 1 and seqs[-1] == 6 and len(seqs) <= 3
    last = shown["points"][-1]
    assert last["epsilon"] == status["spent"]["epsilon"]
    assert last["rdp_epsilon"] == pytest.approx(status["cross_check"]["epsilon"], rel=1e-9)
    assert shown["rdp_delta"] == 1e-4 and shown["budget"]["epsilon"] == 10.0
    assert [c["budget"]["epsilon"] for c in shown["changes"]] == [10.0]
    every = analyst.get(BURNDOWN).json()["points"]  # 200 points: every release
    assert [p["seq"] for p in every] == [1, 2, 3, 4, 5, 6]
    # Summed in other buckets: equal up to the order the floats were added in.
    assert every[-1]["rdp_epsilon"] == pytest.approx(last["rdp_epsilon"], rel=1e-12)
    assert every[-1]["epsilon"] == last["epsilon"]
    for points in (1, 2001, "many"):
        response = analyst.get(BURNDOWN, params={"points": points})
        assert response.status_code == 422 and _error(response)["code"] == "invalid_input"


def test_serve_md_lists_the_ledger_routes_with_the_permission_and_roles_they_check(gateway):
    """docs/serve.md's permissions table says what each ledger route checks, as OpenAPI does."""
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "serve.md").read_text(encoding="utf-8")
    operations = gateway.app.openapi()["paths"]
    for method, route, permission in [
        ("GET", "/v1/datasets/{name}/history", "ledger.read"),
        ("GET", "/v1/datasets/{name}/burndown", "ledger.read"),
        ("PUT", "/v1/datasets/{name}/budget", "budget.set"),
    ]:
        row = next(line for line in docs.splitlines() if f"| {method} | `{route}` |" in line)
        cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
        operation = operations[route][method.lower()]
        assert cells[2] == operation["x-veil-permission"] == permission, row
        assert sorted(cells[3].split(", ")) == operation["x-veil-roles"], row
