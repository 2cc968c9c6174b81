"""The console's access page over real HTTP: grants and keys, granted, revoked and refused.

Each test signs in through the real sign-in form (``console_client``), acts
through the page's forms (CSRF token and all), then checks the effect on the
``/v1`` API with bearer keys and on the workspace's trail: the access
library's own entries and the gateway's ``serve.request`` entry of each
console request.
"""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest

from veil.access import Outcome, Trail, parse_key

pytestmark = [
    pytest.mark.xdist_group("serve"),
    pytest.mark.slow,
]  # slow tier (not in `make test-fast`): half a second to seconds a test

PAGE = "/console/access"
GRANT = "/console/access/grants"
REVOKE = "/console/access/grants/revoke"


def _trail(gateway: Any, action: str) -> list[Any]:
    gateway.state.spool.flush()
    return Trail(gateway.state.store).entries(action=action)


def _console_requests(gateway: Any, route: str) -> list[Any]:
    return [e for e in _trail(gateway, "serve.request") if e.details.get("route") == route]


def _key_id(token: str) -> str:
    parsed = parse_key(token)
    assert parsed is not None
    return parsed[0]


def _grant_rows(html: str) -> set[tuple[str, str, str]]:
    """(principal, role, on) of each row of the page's grants table."""
    table = html.split('class="access-grants"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<th scope="row">([^<]*)</th>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>', table)
    return {(unescape(p), r, unescape(o)) for p, r, o in rows}


def _key_status(html: str, key_id: str) -> str:
    row = html.split(f"<code>{key_id}</code>", 1)[1].split("</tr>", 1)[0]
    found = re.search(r'class="status status-(\w+)"', row)
    assert found, row
    return found.group(1)


def test_owner_sees_grants_keys_and_the_forms_an_auditor_only_the_tables(gateway, console_client):
    owner = console_client("owner")
    page = owner.get(PAGE)
    assert page.status_code == 200, page.text[:800]
    html = page.text
    assert ("svc:test-analyst", "analyst", "the workspace") in _grant_rows(html)
    for role, token in gateway.keys.items():
        assert _key_status(html, _key_id(token)) == "active", role
        secret = token[len("veil_sk_") + 13 :]  # after veil_sk_<12 hex>_; it may hold "_"
        assert len(secret) == 43 and secret not in html  # never a secret
    assert '<form method="post" action="/console/access/grants"' in html
    assert 'for="f-principal"' in html and 'id="f-role"' in html and 'id="f-dataset"' in html
    assert html.count(">Revoke key</button>") == len(gateway.keys)
    # the key this page is signed in with says so, and warns before its button
    own = html.split(f"<code>{_key_id(gateway.keys['owner'])}</code>", 1)[1].split("</tr>", 1)[0]
    assert "this session's key" in own
    assert "revoking it signs you out at once" in own
    assert html.count('id="own-key-warning"') == 1

    auditor = console_client("auditor").get(PAGE)
    assert auditor.status_code == 200
    assert ("svc:test-owner", "owner", "the workspace") in _grant_rows(auditor.text)
    assert _key_status(auditor.text, _key_id(gateway.keys["consumer"])) == "active"
    assert "/console/access/grants" not in auditor.text
    assert ">Revoke" not in auditor.text

    refused = console_client("analyst").get(PAGE)
    assert refused.status_code == 403
    assert "access.read" in refused.text


def test_owner_grants_a_role_on_a_dataset_from_the_page_and_the_key_uses_it(
    gateway, console_client
):
    _, token = gateway.state.operator.create_key("report", "analyst")
    report = gateway.client(token=token)
    assert report.get("/v1/datasets/digits").status_code == 200
    owner = console_client("owner")

    taken = owner.submit(REVOKE, {"principal": "svc:report", "role": "analyst", "dataset": ""})
    assert taken.status_code == 303, taken.text[:800]
    assert taken.headers["location"] == f"{PAGE}?done=revoke"
    assert report.get("/v1/datasets/digits").status_code == 403  # at once in this worker

    given = owner.submit(
        GRANT,
        {"principal": "svc:report", "role": "analyst", "dataset": "digits", "reason": "q3"},
    )
    assert given.status_code == 303, given.text[:800]
    assert given.headers["location"] == f"{PAGE}?done=grant"
    shown = owner.get(given.headers["location"]).text
    assert "The role was granted." in shown
    assert ("svc:report", "analyst", "dataset digits") in _grant_rows(shown)
    assert report.get("/v1/datasets/digits").status_code == 200

    granted = _trail(gateway, "access.grant")[-1]
    assert (granted.actor, granted.dataset, granted.purpose) == ("svc:test-owner", "digits", "q3")
    assert granted.details["key_id"] == _key_id(gateway.keys["owner"])
    assert _trail(gateway, "access.revoke")[-1].details["principal"] == "svc:report"
    posted = _console_requests(gateway, GRANT)
    assert [(e.outcome, e.details["status"]) for e in posted] == [(Outcome.ALLOWED, 303)]
    assert posted[0].actor == "svc:test-owner"
    assert posted[0].dataset == "digits"
    assert posted[0].details["change"] == "grant"
    assert posted[0].details["principal"] == "svc:report"
    assert _console_requests(gateway, REVOKE)[0].details["change"] == "revoke"


def test_owner_revokes_a_key_and_its_bearer_requests_and_console_session_end(
    gateway, console_client
):
    key_id = _key_id(gateway.keys["analyst"])
    bearer = gateway.client("analyst")
    assert bearer.get("/v1/datasets").status_code == 200
    session = console_client("analyst")
    assert session.get("/console").status_code == 200

    owner = console_client("owner")
    response = owner.submit(f"{PAGE}/keys/{key_id}/revoke", {"reason": "left"}, page=PAGE)
    assert response.status_code == 303, response.text[:800]
    assert response.headers["location"] == f"{PAGE}?done=key"

    assert bearer.get("/v1/datasets").status_code == 401
    signed_out = session.get("/console")
    assert signed_out.status_code == 303
    assert signed_out.headers["location"].startswith("/console/sign-in")
    page = owner.get(response.headers["location"]).text
    assert "The key was revoked" in page
    assert _key_status(page, key_id) == "revoked"

    entry = _trail(gateway, "keys.revoke")[-1]
    assert entry.actor == "svc:test-owner"
    assert (entry.details["key_id"], entry.purpose) == (key_id, "left")
    request = _console_requests(gateway, "/console/access/keys/{key_id}/revoke")[-1]
    assert request.outcome == Outcome.ALLOWED
    assert request.details["revoked_key"] == key_id


def test_revoking_the_session_key_from_the_page_signs_it_out(gateway, console_client):
    owner = console_client("owner")
    key_id = _key_id(gateway.keys["owner"])
    response = owner.submit(f"{PAGE}/keys/{key_id}/revoke", {}, page=PAGE)
    assert response.status_code == 303, response.text[:800]
    assert response.headers["location"].startswith("/console/sign-in")
    again = owner.get(PAGE)
    assert again.status_code == 303
    assert again.headers["location"].startswith("/console/sign-in")
    assert gateway.client("owner").get("/v1/access/keys").status_code == 401


@pytest.mark.parametrize("route", [GRANT, REVOKE])
def test_an_analyst_posting_a_grant_form_is_refused_and_nothing_changes(
    gateway, console_client, route
):
    before = gateway.client("owner").get("/v1/access/grants").json()
    analyst = console_client("analyst")
    token = analyst.csrf("/console")  # a valid token of the analyst's own session
    response = analyst.post(
        route, data={"csrf": token, "principal": "svc:test-analyst", "role": "owner"}
    )
    assert response.status_code == 403
    assert "access.manage" in response.text
    assert gateway.client("owner").get("/v1/access/grants").json() == before
    assert _trail(gateway, "access.grant") == []
    assert _trail(gateway, "access.revoke") == []
    refusals = _trail(gateway, "console:access.manage")
    assert [(e.actor, e.outcome) for e in refusals] == [("svc:test-analyst", Outcome.REFUSED)]
    requests = _console_requests(gateway, route)
    assert [(e.outcome, e.details["status"]) for e in requests] == [(Outcome.REFUSED, 403)]


def test_a_forged_or_foreign_form_is_refused_and_nothing_changes(gateway, console_client):
    before = gateway.client("owner").get("/v1/access/grants").json()
    owner = console_client("owner")
    body = {"principal": "svc:intruder", "role": "owner"}
    forged = owner.post(GRANT, data={**body, "csrf": "0" * 64})
    assert forged.status_code == 403
    assert "CSRF" in forged.text
    missing = owner.post(GRANT, data=body)
    assert missing.status_code == 403
    foreign = owner.post(
        GRANT,
        data={**body, "csrf": owner.csrf(PAGE)},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    key_id = _key_id(gateway.keys["analyst"])
    revoke = owner.post(f"{PAGE}/keys/{key_id}/revoke", data={"csrf": "forged"})
    assert revoke.status_code == 403
    assert gateway.client("owner").get("/v1/access/grants").json() == before
    assert gateway.client("analyst").get("/v1/datasets").status_code == 200
    assert _trail(gateway, "access.grant") == []
    assert _trail(gateway, "keys.revoke") == []
    statuses = [e.details["status"] for e in _console_requests(gateway, GRANT)]
    assert statuses == [403, 403, 403]


def test_bad_forms_show_the_page_with_the_problem(gateway, console_client):
    owner = console_client("owner")
    unknown = owner.submit(GRANT, {"principal": "svc:report", "role": "admin"}, page=PAGE)
    assert unknown.status_code == 422
    text = unescape(unknown.text)
    assert "'admin'" in text
    for role in ("owner", "analyst", "auditor", "consumer"):
        assert role in text.split('id="access-problems"', 1)[1].split("</div>", 1)[0]
    assert 'value="svc:report"' in unknown.text  # the form keeps what was typed

    name = owner.submit(GRANT, {"principal": "svc:Bad Name", "role": "analyst"}, page=PAGE)
    assert name.status_code == 400
    assert "invalid principal name" in name.text

    person = gateway.state.operator.principal.name
    first = owner.submit(REVOKE, {"principal": person, "role": "owner"}, page=PAGE)
    assert first.status_code == 303
    last = owner.submit(REVOKE, {"principal": "svc:test-owner", "role": "owner"}, page=PAGE)
    assert last.status_code == 409
    assert "the workspace would have no owner" in last.text
    assert ("svc:test-owner", "owner", "the workspace") in _grant_rows(last.text)

    missing = owner.submit(f"{PAGE}/keys/000000000000/revoke", {}, page=PAGE)
    assert missing.status_code == 404
    assert "no service key" in unescape(missing.text)
    assert _trail(gateway, "access.grant") == []


def test_a_dataset_scoped_key_sees_and_manages_that_dataset_only(gateway):
    from tests.serve.console.conftest import sign_in

    operator = gateway.state.operator
    operator.grant("svc:report", "analyst", "digits")
    _, auditor_token = operator.create_key("digits-auditor", "auditor", "digits")
    auditor = sign_in(gateway.url, auditor_token)
    page = auditor.get(PAGE)
    assert page.status_code == 200, page.text[:800]
    rows = _grant_rows(page.text)
    assert ("svc:report", "analyst", "dataset digits") in rows
    assert ("svc:test-owner", "owner", "the workspace") in rows  # workspace grants reach digits
    assert "Keys are listed to keys that read access on the whole workspace." in page.text
    assert "<code>" + _key_id(gateway.keys["owner"]) not in page.text
    assert ">Revoke" not in page.text

    _, steward_token = operator.create_key("digits-owner", "owner", "digits")
    steward = sign_in(gateway.url, steward_token)
    html = steward.get(PAGE).text
    assert '<form method="post" action="/console/access/grants"' in html
    revocable = re.findall(r'aria-label="Revoke (\w+) on ([^"]+) from ([^"]+)"', html)
    assert sorted({on for _, on, _ in revocable}) == ["dataset digits"]
    workspace = steward.submit(GRANT, {"principal": "svc:report", "role": "analyst"}, page=PAGE)
    assert workspace.status_code == 403
    assert "access.manage" in workspace.text
    auditor.close()
    steward.close()
