"""An auditor in Chromium: the trail verified, an entry's inclusion proof, a model's card and report."""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest
from tests.browser._browser import expect
from tests.serve._audit_report import install_report, make_report
from tests.serve.conftest import MODEL

pytestmark = pytest.mark.slow


def test_an_auditor_verifies_the_trail_and_an_entrys_inclusion_proof(console, page, shoot):
    console.sign_in(page, "auditor")
    page.goto("/console/trail")
    expect(page.get_by_role("heading", level=1)).to_have_text("Trail")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name=re.compile("verify", re.IGNORECASE)).click()
    page.wait_for_load_state()
    assert posted.value.status == 303, posted.value.status
    assert urlsplit(page.url).path == "/console/trail"
    # The verification runs in the background; the page says so and shows the result when done.
    last = page.locator("#trail-last")
    deadline = time.monotonic() + 60
    while "passed" not in last.inner_text() and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()
    expect(last).to_contain_text("passed")
    assert "problem" not in last.inner_text()
    # The API says the same: the run is recorded on the trail by this auditor.
    status = console.api("auditor").get("/v1/trail/status").json()
    assert status["last_verification"]["ok"] is True
    page.evaluate("window.scrollTo(0, 0)")
    shoot(page, "trail-verified")

    entries = page.get_by_role("table").filter(has=page.locator("caption", has_text="entries"))
    first = entries.locator("tbody tr").first.get_by_role("link")
    seq = first.inner_text().strip()
    first.click()
    page.wait_for_load_state()
    assert urlsplit(page.url).path == f"/console/trail/{seq}"
    proof = page.locator("#proof")
    expect(proof.get_by_role("status")).to_contain_text("The proof verifies")
    assert proof.get_by_role("alert").count() == 0
    api = console.api("auditor").get(f"/v1/trail/{seq}/proof")
    assert api.status_code == 200, api.text
    proof.evaluate("el => el.scrollIntoView()")
    shoot(page, "trail-entry-proof")


def test_an_auditor_sees_a_models_card_and_its_audit_report_in_a_sandboxed_frame(
    console, page, serve_template, tmp_path_factory, shoot
):
    install_report(
        make_report(serve_template.home, tmp_path_factory.mktemp("audit")), console.gateway.home
    )
    console.sign_in(page, "auditor")
    page.goto("/console/models")
    page.get_by_role("link", name=MODEL, exact=True).first.click()
    page.wait_for_load_state()
    assert urlsplit(page.url).path == f"/console/models/{MODEL}"
    card = console.api("auditor").get(f"/v1/models/{MODEL}").json()["card"]
    card_table = page.get_by_role("table", name=re.compile("training cost", re.IGNORECASE))
    expect(card_table).to_contain_text(f"{card['epsilon']:.4g}")
    frame_element = page.locator("iframe.report-frame")
    frame_element.scroll_into_view_if_needed()
    assert frame_element.get_attribute("sandbox") == ""  # the report may run nothing
    report = page.frame_locator("iframe.report-frame")
    expect(report.locator("body")).to_contain_text("Privacy audit of")
    shoot(page, "model")
