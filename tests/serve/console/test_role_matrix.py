"""Each role gets from every console route what it gets from the matching ``/v1`` route.

One table pairs each console route (a page or a form) with the ``/v1`` route
that does the same thing; for the owner, analyst, auditor and consumer keys of
the served digits workspace, and an analyst key limited to another dataset,
the console's answer and the API's must agree: both succeed, or both refuse
with the same status. The console must be no back door and no locked door.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.serve.console.conftest import sign_in
from tests.serve.console.test_outsider import MODEL, _key_id, _text

pytestmark = [
    pytest.mark.xdist_group("serve"),
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:uvicorn"),
]

ROLES = ("owner", "analyst", "auditor", "consumer", "elsewhere")


def _pairs(key_for: dict[str, str]) -> list[tuple[str, str, dict[str, str], str, str, Any]]:
    """(console method, path, form, /v1 method, path, JSON body) for every console route."""
    query = {"sql": "SELECT COUNT(*) FROM digits", "epsilon": "0.05"}
    budget = {"epsilon": "12", "delta": "1e-4", "reason": "matrix"}
    return [
        ("GET", "/console/datasets", {}, "GET", "/v1/datasets", None),
        ("GET", "/console/datasets/digits", {}, "GET", "/v1/datasets/digits", None),
        ("GET", "/console/datasets/digits/query", {}, "POST", "/v1/datasets/digits/query",
         {"sql": query["sql"], "epsilon": 0.05}),
        ("POST", "/console/datasets/digits/query", query, "POST", "/v1/datasets/digits/query",
         {"sql": query["sql"], "epsilon": 0.05}),
        ("POST", "/console/datasets/digits/budget", budget, "PUT", "/v1/datasets/digits/budget",
         {"epsilon": 12, "delta": 1e-4, "reason": "matrix"}),
        ("GET", "/console/models", {}, "GET", "/v1/models", None),
        ("GET", f"/console/models/{MODEL}", {}, "GET", f"/v1/models/{MODEL}", None),
        ("GET", f"/console/models/{MODEL}/report", {}, "GET", f"/v1/models/{MODEL}/audit/report",
         None),
        ("GET", f"/console/models/{MODEL}/live", {}, "GET", f"/v1/models/{MODEL}", None),
        ("GET", "/console/trail", {}, "GET", "/v1/trail", None),
        ("GET", "/console/trail/1", {}, "GET", "/v1/trail/1", None),
        ("GET", "/console/trail/1/proof.json", {}, "GET", "/v1/trail/1/proof", None),
        ("GET", "/console/trail/verification", {}, "GET", "/v1/trail/status", None),
        ("POST", "/console/trail/verify", {}, "POST", "/v1/trail/verify", None),
        ("GET", "/console/access", {}, "GET", "/v1/access/grants", None),
        ("POST", "/console/access/grants",
         {"principal": "svc:matrix-a", "role": "auditor", "dataset": "digits", "reason": "m"},
         "POST", "/v1/access/grants",
         {"principal": "svc:matrix-b", "role": "auditor", "dataset": "digits", "reason": "m"}),
        ("POST", "/console/access/grants/revoke",
         {"principal": "svc:matrix-a", "role": "auditor", "dataset": "digits", "reason": "m"},
         "POST", "/v1/access/grants/revoke",
         {"principal": "svc:matrix-b", "role": "auditor", "dataset": "digits", "reason": "m"}),
        ("POST", f"/console/access/keys/{key_for['console']}/revoke", {"reason": "m"},
         "POST", f"/v1/access/keys/{key_for['v1']}/revoke", {"reason": "m"}),
    ]  # fmt: skip


def _outcome(status: int) -> str:
    return "ok" if status < 400 else str(status)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_from_the_console_what_it_gets_from_v1(gateway: Any, role: str) -> None:
    operator = gateway.state.operator
    token = gateway.keys.get(role)
    if token is None:  # an analyst of a dataset that is not digits
        _, token = operator.create_key("elsewhere", "analyst", "other-dataset")
    console = sign_in(gateway.url, token)
    api = gateway.client(token=token)
    spare = {side: _key_id(operator.create_key(f"spare-{side}", "consumer", None)[1])
             for side in ("console", "v1")}  # fmt: skip
    mismatches = []
    for c_method, c_path, form, v_method, v_path, body in _pairs(spare):
        if c_method == "GET":
            seen = console.get(c_path)
        else:
            seen = console.post(c_path, data={**form, "csrf": console.csrf()})
        assert seen.status_code < 500, (c_path, _text(seen.text)[:400])
        if seen.status_code >= 400 and c_path != f"/console/models/{MODEL}/live":
            assert "text/html" in seen.headers["content-type"], c_path
        answer = api.request(v_method, v_path, json=body)
        if _outcome(seen.status_code) != _outcome(answer.status_code):
            mismatches.append(
                f"{c_method} {c_path}: console {seen.status_code}, "
                f"{v_method} {v_path}: {answer.status_code} {answer.text[:120]}"
            )
    console.close()
    assert not mismatches, "\n".join(mismatches)
