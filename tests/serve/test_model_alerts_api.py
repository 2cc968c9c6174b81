"""Watching a model over real HTTP: the monitor's alerts, every key's usage, the audit report.

``GET /v1/models/{name}/alerts`` and ``/usage/keys`` need ``trail.read`` on the
model's training set (owners, auditors); ``/audit`` and ``/audit/report`` need
``model.read``. Each test starts the gateway on its own copy of the served
workspace (``conftest.py``) and provokes what it reads: a probing key for an
alert (30 copies of one record in one request), predictions for usage, a real
audit report (``_audit_report.py``) for the report.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sklearn.datasets import load_digits
from tests.serve._audit_report import install_report, make_report

from veil.access import Trail, parse_key

pytestmark = [
    pytest.mark.xdist_group("serve"),
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:uvicorn"),
]

MODEL = "digits-lr"
BASE = f"/v1/models/{MODEL}"
PROBING = f"models:\n  {MODEL}: {{monitor: {{extraction: false, probing_window: 10, probing_count: 5}}}}\n"


def _key_id(gateway: Any, role: str) -> str:
    parsed = parse_key(gateway.keys[role])
    assert parsed is not None
    return parsed[0]


def _records(gateway: Any, n: int, start: int = 0) -> list[dict[str, Any]]:
    detail = gateway.client("analyst").get(BASE).json()
    names = [c["name"] for c in detail["inputs"]["columns"]]
    return [
        dict(zip(names, map(float, row), strict=True))
        for row in load_digits().data[start : start + n]
    ]


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = dict(response.json()["error"])
    assert error["code"] == code, error
    return error


def _probe(gateway: Any, role: str, start: int) -> None:
    answer = gateway.client(role).post(
        f"{BASE}/predict", json={"records": _records(gateway, 1, start=start) * 12}
    )
    assert answer.status_code == 200, answer.text
    gateway.state.spool.flush()


# ---------------------------------------------------------------- alerts
def test_alerts_are_the_monitors_trail_entries_newest_first_and_paged(start_gateway):
    gateway = start_gateway(PROBING)
    auditor = gateway.client("auditor")
    empty = auditor.get(f"{BASE}/alerts")
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"model": MODEL, "alerts": [], "next_before": None}
    _probe(gateway, "consumer", 3)
    _probe(gateway, "analyst", 5)
    trail = Trail(gateway.state.store).entries(action="serve.alert")
    assert [e.details["key_id"] for e in trail] == [
        _key_id(gateway, "consumer"),
        _key_id(gateway, "analyst"),
    ]
    listed = auditor.get(f"{BASE}/alerts").json()
    assert [a["seq"] for a in listed["alerts"]] == [trail[1].seq, trail[0].seq]
    newest = listed["alerts"][0]
    assert newest["signal"] == "probing" and newest["action"] == "alert"
    assert newest["key_id"] == _key_id(gateway, "analyst") and newest["applied"] is True
    assert newest["statistic"] >= newest["threshold"] == 5
    # one at a time: the first page says where the next starts, the last says there is none
    first = auditor.get(f"{BASE}/alerts", params={"limit": 1}).json()
    assert [a["seq"] for a in first["alerts"]] == [trail[1].seq]
    assert first["next_before"] == trail[1].seq
    second = auditor.get(f"{BASE}/alerts", params={"limit": 1, "before": first["next_before"]})
    assert [a["seq"] for a in second.json()["alerts"]] == [trail[0].seq]
    assert second.json()["next_before"] is None
    # the owner reads them too; the request is on the trail with the model's dataset
    assert len(gateway.client("owner").get(f"{BASE}/alerts").json()["alerts"]) == 2
    gateway.state.spool.flush()
    reads = [
        e
        for e in Trail(gateway.state.store).entries(action="serve.request")
        if e.details.get("route") == "/v1/models/{name}/alerts"
    ]
    assert reads and all(e.dataset == "digits" for e in reads)


def test_alerts_of_another_model_are_not_shown(start_gateway):
    gateway = start_gateway(PROBING)
    _probe(gateway, "consumer", 3)
    # An alert whose model only differs in case, and one naming the model elsewhere than as
    # its model: neither is this model's (SQLite's LIKE ignores case; the parsed entry decides).
    operator = gateway.state.operator
    operator.record("serve.alert", details={"model": MODEL.upper(), "signal": "probing"})
    operator.record("serve.alert", details={"principal": f'"model":"{MODEL}"', "model": "x"})
    alerts = gateway.client("auditor").get(f"{BASE}/alerts").json()["alerts"]
    assert [a["key_id"] for a in alerts] == [_key_id(gateway, "consumer")]


def test_alerts_and_usage_by_key_need_trail_read(start_gateway):
    gateway = start_gateway(PROBING)
    for role in ("analyst", "consumer"):
        for path in ("alerts", "usage/keys"):
            error = _error(gateway.client(role).get(f"{BASE}/{path}"), 403, "permission_denied")
            assert "trail.read" in json.dumps(error)
    _error(gateway.client().get(f"{BASE}/alerts"), 401, "unauthenticated")
    _error(gateway.client("auditor").get("/v1/models/no-such-model/alerts"), 404, "not_found")


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 201}, {"before": -1}, {"before": "x"}, {"limit": "1e9"}]
)
def test_a_bad_alert_page_is_a_422_that_names_the_parameter(gateway, params):
    error = _error(
        gateway.client("auditor").get(f"{BASE}/alerts", params=params), 422, "invalid_input"
    )
    assert next(iter(params)) in json.dumps(error)


# ---------------------------------------------------------------- usage by key
def test_usage_by_key_lists_each_key_with_its_count_budget_and_policy(start_gateway, serve_home):
    consumer = _key_id_of(serve_home, "consumer")
    gateway = start_gateway(
        f"keys:\n  {consumer}:\n    models:\n      {MODEL}: {{output: top_k, queries_per_key: 40}}\n"
    )
    client = gateway.client("consumer")
    assert client.post(f"{BASE}/predict", json={"records": _records(gateway, 7)}).status_code == 200
    gateway.state.spool.flush()
    listed = gateway.client("auditor").get(f"{BASE}/usage/keys")
    assert listed.status_code == 200, listed.text
    keys = {k["key_id"]: k for k in listed.json()["keys"]}
    assert set(keys) == {_key_id(gateway, r) for r in ("owner", "analyst", "auditor", "consumer")}
    mine = keys[consumer]
    assert (mine["used"], mine["cap"], mine["left"], mine["output"]) == (7, 40, 33, "top_k")
    assert mine["principal"] == "svc:test-consumer" and mine["roles"] == ["consumer on *"]
    assert mine["policy"]["top_k"] == 3 and mine["rate"] == "20/second"
    assert listed.json()["keys"][0]["key_id"] == consumer  # most records first
    analyst = keys[_key_id(gateway, "analyst")]
    assert (analyst["used"], analyst["cap"], analyst["output"]) == (0, 500, "label")
    # the same count as the key's own view
    own = client.get(f"{BASE}/usage").json()
    assert (own["used"], own["left"]) == (mine["used"], mine["left"])
    # a revoked key (as the monitor's suspend revokes one) stays listed with what it used
    gateway.state.operator.revoke_key(consumer, reason="test")
    after = gateway.client("auditor").get(f"{BASE}/usage/keys").json()["keys"]
    (gone,) = [k for k in after if k["key_id"] == consumer]
    assert gone["revoked"] is True and gone["used"] == 7
    assert not any(k["revoked"] for k in after if k["key_id"] != consumer)


def _key_id_of(served: Any, role: str) -> str:
    parsed = parse_key(served.keys[role])
    assert parsed is not None
    return parsed[0]


# ---------------------------------------------------------------- the audit report
def test_the_audit_report_is_a_404_that_says_how_to_make_one_until_there_is_one(
    gateway, serve_template, tmp_path_factory
):
    for path in ("audit", "audit/report"):
        error = _error(gateway.client("auditor").get(f"{BASE}/{path}"), 404, "not_found")
        assert "veil audit" in error["fix"]
    install_report(make_report(serve_template.home, tmp_path_factory.mktemp("audit")), gateway.home)
    audit = gateway.client("analyst").get(f"{BASE}/audit")
    assert audit.status_code == 200, audit.text
    body = audit.json()
    assert body["model"] == MODEL and body["has_html"] is True
    attacks = [v["attack"] for v in body["report"]["verdicts"]]
    assert "membership" in attacks
    (threshold,) = body["report"]["membership"]
    assert threshold["attack"] == "threshold" and 0 <= threshold["auc"] <= 1
    # the JSON on disk holds per-example scores (which rows are members); the answer never does
    assert "per_example" in (gateway.home / "models" / MODEL / "audit-report.json").read_text()
    assert "per_example" not in audit.text
    report = gateway.client("analyst").get(f"{BASE}/audit/report")
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    csp = report.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "frame-ancestors 'self'" in csp
    assert "script-src" not in csp  # default-src 'none' forbids scripts
    assert "Privacy audit of" in report.text
    _error(gateway.client("consumer").get(f"{BASE}/audit"), 403, "permission_denied")


def test_an_unreadable_report_is_shown_as_such_not_a_500(gateway):
    folder = gateway.home / "models" / MODEL
    (folder / "audit-report.json").write_text("{not json", encoding="utf-8")
    body = gateway.client("auditor").get(f"{BASE}/audit").json()
    assert body["report"]["notes"][0].startswith("audit-report.json could not be read")
    assert body["has_html"] is False


def test_a_page_reads_a_bounded_window_of_alerts_and_says_where_to_go_on(gateway):
    """Many alerts on other models cannot make a page slow: each reads at most ``scan``
    alert entries, and ``next_before`` leads on through the windows to every alert."""
    from veil.serve._model_insight import model_alerts

    operator = gateway.state.operator
    mine = []
    for i in range(12):
        model = MODEL if i % 4 == 0 else "other-model"
        entry = operator.record("serve.alert", details={"model": model, "signal": "probing"})
        if model == MODEL:
            mine.append(entry.seq)
    seen, before, pages = [], None, 0
    while True:
        page = model_alerts(gateway.state.store, MODEL, before=before, limit=2, scan=3)
        assert len(page.alerts) <= 2
        seen += [a.seq for a in page.alerts]
        pages += 1
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == sorted(mine, reverse=True)
    assert pages >= 4  # 12 entries, 3 a window
    # with a window that holds them all, two pages of two and one of one
    whole = model_alerts(gateway.state.store, MODEL, limit=2)
    assert [a.seq for a in whole.alerts] == sorted(mine, reverse=True)[:2]
    assert whole.next_before == whole.alerts[-1].seq
    last = model_alerts(gateway.state.store, MODEL, limit=2, before=mine[1])
    assert [a.seq for a in last.alerts] == [mine[0]] and last.next_before is None


def test_serve_md_lists_these_routes_with_the_permission_and_roles_they_check(gateway):
    """docs/serve.md's table says what each route needs; the OpenAPI schema says what it checks."""
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "serve.md").read_text(encoding="utf-8")
    operations = gateway.app.openapi()["paths"]
    for path in ("usage/keys", "alerts", "audit", "audit/report"):
        route = f"/v1/models/{{name}}/{path}"
        row = next(line for line in docs.splitlines() if f"| `{route}` |" in line)
        cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
        operation = operations[route]["get"]
        assert cells[0] == "GET" and cells[2] == operation["x-veil-permission"], row
        assert sorted(cells[3].split(", ")) == operation["x-veil-roles"], row


def test_alert_pages_read_the_same_on_sqlite_and_postgresql(store):
    """The query (a LIKE with an escape, CASE, the (action, seq) index) on both databases;
    an underscore in a name is a letter, not LIKE's wildcard."""
    from veil.access import Access, Principal
    from veil.serve._model_insight import model_alerts

    operator = Access(store, Principal("operator"))
    names = ("m_1", "mx1", "M_1", "m_1")  # the first and last are this model's
    seqs = [
        operator.record("serve.alert", details={"model": n, "signal": "dependence"}).seq
        for n in names
    ]
    operator.record("serve.request", details={"model": "m_1"})  # not an alert
    page = model_alerts(store, "m_1", limit=1)
    assert [a.seq for a in page.alerts] == [seqs[3]] and page.next_before == seqs[3]
    rest = model_alerts(store, "m_1", limit=1, before=page.next_before)
    assert [a.seq for a in rest.alerts] == [seqs[0]] and rest.next_before is None
    windows = model_alerts(store, "m_1", limit=5, scan=2)
    assert [a.seq for a in windows.alerts] == [seqs[3]] and windows.next_before == seqs[2]
