"""The console at 390 and 1280 px wide, its Content-Security-Policy, and a forged form from elsewhere."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from tests.browser._browser import NARROW, WIDE, expect
from tests.serve.conftest import DATASET

pytestmark = pytest.mark.slow

SECTIONS = ("Datasets", "Models", "Trail", "Access")


@pytest.mark.parametrize("viewport", [NARROW, WIDE], ids=["390px", "1280px"])
def test_the_dataset_page_fits_the_screen_and_the_nav_is_reachable(
    console, open_page, viewport, shoot
):
    page = open_page(viewport)
    console.sign_in(page, "owner")
    page.goto(f"/console/datasets/{DATASET}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(DATASET)
    page.wait_for_load_state("load")
    # The burn-down is drawn by the console's own scripts, which the policy lets run.
    expect(page.locator("#burndown-chart canvas").first).to_be_attached()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"], f"the body scrolls sideways: {width} px"
    nav = page.get_by_role("navigation")
    for name in SECTIONS:
        link = nav.get_by_role("link", name=name, exact=True)
        if not link.is_visible():  # a narrow screen may fold the nav behind a button
            nav.get_by_role("button").first.click()
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    link = nav.get_by_role("link", name="Trail", exact=True)
    link.click()
    page.wait_for_load_state()
    assert urlsplit(page.url).path == "/console/trail"
    if viewport is NARROW:
        page.goto(f"/console/datasets/{DATASET}")
        shoot(page, "dataset-390px")


def test_every_console_page_sends_the_policy_and_breaks_none_of_it(console, page, recorder):
    response = page.goto("/console/sign-in")
    assert response is not None
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if " " in d.strip())
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert "http" not in csp and "*" not in csp  # nothing from anywhere else
    console.sign_in(page, "owner")
    visited = ["/console", "/console/datasets", f"/console/datasets/{DATASET}", "/console/models"]
    visited += ["/console/trail", "/console/access", f"/console/datasets/{DATASET}/query"]
    for path in visited:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        assert response.headers["content-security-policy"] == csp, path
        page.wait_for_load_state("load")
    assert recorder.csp_violations() == []
    assert recorder.errors == []
    # The pages did load their own scripts and styles (a policy that blocked them would too).
    assert any("/console/static/" in url and ".js" in url for url in recorder.requests)
    assert any("/console/static/" in url and ".css" in url for url in recorder.requests)


def test_a_form_posted_from_another_origin_is_refused(console, page):
    """A page elsewhere (another port is another origin) submits the owner's budget form."""
    console.sign_in(page, "owner")
    evil = "http://127.0.0.1:9/"  # answered by the browser itself: nothing listens there
    target = f"{console.url}/console/datasets/{DATASET}/budget"
    real = page.locator("input[name=csrf]").first.get_attribute("value")
    for token in ("guessed", real):  # the real token, leaked, still does not come from here
        page.route(
            evil,
            lambda route, token=token: route.fulfill(
                status=200,
                content_type="text/html",
                body=f"<form method=post action='{target}'>"
                "<input name=epsilon value=1000><input name=reason value=mine>"
                f"<input name=csrf value='{token}'><button>win a prize</button></form>",
            ),
        )
        page.goto(evil)
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.get_by_role("button", name="win a prize").click()
        page.wait_for_load_state()
        assert posted.value.status == 403, posted.value.status
        expect(page.get_by_role("main")).to_contain_text("did not come from this console")
        page.unroute(evil)
    budget = console.api("owner").get(f"/v1/datasets/{DATASET}/budget").json()["budget"]
    assert budget["epsilon"] == 10.0  # unchanged


def test_markup_typed_into_a_form_is_shown_as_text_and_never_runs(console, page):
    """A purpose that is a script, kept in the ledger, comes back on the dataset page as text."""
    payload = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message) or dialog.dismiss())
    console.sign_in(page, "analyst")
    page.goto(f"/console/datasets/{DATASET}/query")
    form = page.get_by_role("form", name=re.compile("DP query", re.IGNORECASE))
    form.get_by_label("SQL").fill(f"SELECT COUNT(*) AS n FROM {DATASET}")
    form.get_by_label("Epsilon").fill("0.5")
    form.get_by_label("Purpose").fill(payload)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        form.get_by_role("button", name="Run query").click()
    assert posted.value.status == 200
    page.goto(f"/console/datasets/{DATASET}")
    page.wait_for_load_state("load")
    releases = page.locator("table.releases")
    expect(releases).to_contain_text(payload)  # the text itself, escaped into the page
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("table.releases script, table.releases img").count() == 0
    assert dialogs == []
