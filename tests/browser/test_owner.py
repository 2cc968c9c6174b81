"""An owner's actions in Chromium (budget, grant, revoke), and the same checks with the page bypassed."""

from __future__ import annotations

import math
import re
import time

import pytest
from tests.browser._browser import expect
from tests.serve.conftest import DATASET

pytestmark = pytest.mark.slow


def _key_id(token: str) -> str:
    return token.split("_")[2]  # veil_sk_<id>_<secret>


def _submit(page, button) -> int:
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        button.click()
    page.wait_for_load_state()
    return posted.value.status


def test_an_owner_sets_a_budget(console, page, shoot):
    analyst = console.api("analyst")
    for epsilon in (0.5, 1.0, 0.25):  # a few releases for the burn-down
        sql = f"SELECT digit, COUNT(*) AS n FROM {DATASET} GROUP BY digit"
        body = {"sql": sql, "epsilon": epsilon, "purpose": "class balance"}
        assert analyst.post(f"/v1/datasets/{DATASET}/query", json=body).status_code == 200
    console.sign_in(page, "owner")
    page.goto("/console/datasets")
    shoot(page, "datasets")
    page.get_by_role("link", name=DATASET, exact=True).click()
    page.wait_for_load_state()
    form = page.get_by_role("form", name=re.compile("set the budget", re.IGNORECASE))
    form.get_by_label("Epsilon").fill("12.5")
    form.get_by_label("Delta").fill("0.0001")
    form.get_by_label("Reason").fill("browser test: a second study was approved")
    assert _submit(page, form.get_by_role("button", name="Set budget")) == 303
    expect(page.get_by_role("status").first).to_be_visible()
    budget = console.api("owner").get(f"/v1/datasets/{DATASET}/budget").json()["budget"]
    assert math.isclose(budget["epsilon"], 12.5) and math.isclose(budget["delta"], 1e-4)
    expect(page.get_by_role("main")).to_contain_text("12.5")
    page.locator("#budget-h").evaluate("el => el.scrollIntoView()")  # the burn-down in view
    shoot(page, "dataset")


def test_an_owner_grants_a_role_and_revokes_a_key(console, page, shoot):
    console.sign_in(page, "owner")
    page.goto("/console/access")
    form = page.locator("form").filter(has=page.get_by_role("button", name="Grant role"))
    form.get_by_label("Principal").fill("svc:dashboard")
    form.get_by_label("Role").select_option("analyst")
    form.get_by_label("Dataset").fill(DATASET)
    form.get_by_label("Reason").fill("browser test: the dashboard reads budgets")
    assert _submit(page, form.get_by_role("button", name="Grant role")) == 303
    grants = console.api("owner").get("/v1/access/grants").json()
    assert any(
        g["principal"] == "svc:dashboard" and g["role"] == "analyst" and g["scope"] == DATASET
        for g in grants["grants"]
    ), grants
    grants_table = page.get_by_role("table", name=re.compile("grants", re.IGNORECASE)).first
    granted = grants_table.get_by_role("row").filter(has_text="svc:dashboard")
    expect(granted.filter(has_text="analyst")).to_contain_text(DATASET)
    analyst_key = _key_id(console.keys["analyst"])
    analyst = console.api("analyst")
    assert analyst.get("/v1/datasets").status_code == 200
    button = page.get_by_role("button", name=f"Revoke key {analyst_key} of svc:test-analyst")
    assert _submit(page, button) == 303
    keys = page.get_by_role("table", name=re.compile("service keys", re.IGNORECASE)).first
    expect(keys.get_by_role("row").filter(has_text=analyst_key)).to_contain_text("revoked")
    deadline = time.monotonic() + 10
    status = analyst.get("/v1/datasets").status_code
    while status != 401 and time.monotonic() < deadline:
        time.sleep(0.3)
        status = analyst.get("/v1/datasets").status_code
    assert status == 401  # the revoked key is refused by the API too
    shoot(page, "access")


# Each action of the console, called on the JSON API with a consumer's key: refused with the
# permission it lacks, as from the page.
API_ACTIONS = [
    (
        "POST",
        f"/v1/datasets/{DATASET}/query",
        {"sql": "SELECT COUNT(*) AS n FROM t", "epsilon": 0.5},
    ),
    ("PUT", f"/v1/datasets/{DATASET}/budget", {"epsilon": 100, "delta": 1e-4, "reason": "mine"}),
    ("GET", f"/v1/datasets/{DATASET}/history", None),
    ("GET", "/v1/trail", None),
    ("POST", "/v1/trail/verify", None),
    ("GET", "/v1/access/grants", None),
    ("POST", "/v1/access/grants", {"principal": "svc:test-consumer", "role": "owner"}),
]


def test_the_role_checks_hold_when_the_page_is_bypassed(console, page):
    console.sign_in(page, "consumer")  # the consumer's console shows none of these actions
    main = page.get_by_role("main")
    for name in ("Datasets", "Trail", "Access"):
        assert main.get_by_role("link", name=name, exact=True).count() == 0
    consumer = console.api("consumer")
    for method, path, body in API_ACTIONS:
        response = consumer.request(method, path, json=body)
        assert response.status_code == 403, (method, path, response.status_code, response.text)
        assert response.json()["error"]["code"] == "permission_denied", (method, path)
    revoke = f"/v1/access/keys/{_key_id(console.keys['owner'])}/revoke"
    assert consumer.post(revoke, json={"reason": "mine now"}).status_code == 403
    # The console's own routes, posted with the consumer's session and a valid CSRF token.
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    sql = "SELECT COUNT(*) AS n FROM t"
    for path, form, permission in [
        (f"/console/datasets/{DATASET}/query", {"sql": sql, "epsilon": "1"}, "budget.spend"),
        (f"/console/datasets/{DATASET}/budget", {"epsilon": "100", "reason": "x"}, "budget.set"),
        ("/console/trail/verify", {}, "trail.read"),
        ("/console/access/grants", {"principal": "svc:x", "role": "owner"}, "access.manage"),
    ]:
        response = page.request.post(path, form={**form, "csrf": csrf})
        assert response.status == 403, (path, response.status)
        assert permission in response.text(), (path, response.text()[:500])
    # Nothing changed: the owner's key still works and the budget is what it was.
    owner = console.api("owner")
    assert owner.get(f"/v1/datasets/{DATASET}/budget").json()["budget"]["epsilon"] == 10.0
