"""The console's trail pages over real HTTP: search, entry and proof, verification; outsiders.

An auditor signed in through the real sign-in form searches the trail (filters,
keyset Older/Newer links), opens an entry whose inclusion proof the page
checked with the standalone verifier (and whose downloaded proof verifies
here too), and starts a full verification whose progress is JSON for
``trail.js`` and whose result is on the page. A consumer is refused every
trail page; bad filters are a 400 page that says what was expected.
"""

from __future__ import annotations

import json
import re
import time
from html import unescape
from typing import Any

import pytest

from veil.access.verifier import verify_inclusion_proof

pytestmark = [
    pytest.mark.xdist_group("serve"),
    pytest.mark.slow,
]  # slow tier (not in `make test-fast`): half a second to seconds a test

PAGE = "/console/trail"


def _seqs(html: str) -> list[int]:
    table = html.split('class="trail-entries"', 1)[1].split("</table>", 1)[0]
    return [int(s) for s in re.findall(r'<a href="/console/trail/(\d+)">', table)]


def _link(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', html)
    return unescape(found.group(1)) if found else None


def test_an_auditor_pages_the_trail_with_older_and_newer_links(
    gateway: Any, console_client: Any
) -> None:
    auditor = console_client("auditor")
    api = gateway.client("auditor")
    for _ in range(60):  # more than a page of entries: each request is one
        api.get("/v1/trail/status")
    gateway.state.spool.flush()
    size = api.get("/v1/trail/status").json()["size"]
    assert size > 60
    first = auditor.get(PAGE)
    assert first.status_code == 200, first.text[:800]
    assert "app;dur=" in first.headers["server-timing"]
    html = first.text
    assert html.count("<h1>") == 1
    seqs = _seqs(html)
    assert seqs[0] >= size  # the newest first (this page's own request may be newer still)
    assert seqs == sorted(seqs, reverse=True)
    assert len(seqs) == 50
    assert 'id="verification"' in html
    assert "Verify the whole trail" in html
    older = _link(html, "next")
    assert older is not None
    assert _link(html, "prev") is None  # the newest page has no Newer link
    second = auditor.get(older)
    assert second.status_code == 200
    older_seqs = _seqs(second.text)
    assert older_seqs[0] == seqs[-1] - 1
    newer = _link(second.text, "prev")
    assert newer is not None
    back = auditor.get(newer)
    assert _seqs(back.text) == [s for s in seqs if s > older_seqs[0]][-50:]


def test_filters_narrow_the_table_and_keep_their_values(gateway: Any, console_client: Any) -> None:
    auditor = console_client("auditor")
    entries = gateway.client("auditor").get("/v1/trail", params={"limit": 200}).json()["entries"]
    action = entries[-1]["action"]
    page = auditor.get(PAGE, params={"action": action})
    assert page.status_code == 200
    expected = [e["seq"] for e in entries if e["action"] == action]
    shown = _seqs(page.text)
    assert set(expected) <= set(shown) or len(shown) == 50
    api = gateway.client("auditor").get("/v1/trail", params={"action": action}).json()
    assert shown == [e["seq"] for e in api["entries"]]
    assert f'value="{action}"' in page.text
    assert "Clear filters" in page.text
    nothing = auditor.get(PAGE, params={"actor": "nobody-at-all"})
    assert nothing.status_code == 200
    assert 'id="trail-empty"' in nothing.text
    window = auditor.get(PAGE, params={"since": "2000-01-01T00:00", "until": "2000-01-02T00:00"})
    assert window.status_code == 200
    assert 'id="trail-empty"' in window.text


def test_an_entry_shows_its_body_and_a_proof_checked_by_the_verifier(
    gateway: Any, console_client: Any
) -> None:
    auditor = console_client("auditor")
    api = gateway.client("auditor")
    key = bytes.fromhex(api.get("/v1/trail/status").json()["public_key"])
    for seq in (1, 3):
        page = auditor.get(f"{PAGE}/{seq}")
        assert page.status_code == 200, page.text[:800]
        html = page.text
        assert f"<h1>Trail entry {seq}</h1>" in html
        assert "The proof verifies" in html
        entry = api.get(f"/v1/trail/{seq}").json()
        assert json.loads(
            unescape(html.split('class="trail-body"', 1)[1].split(">", 1)[1].split("</pre>")[0])
        ) == json.loads(entry["body"])
        download = auditor.get(f"{PAGE}/{seq}/proof.json")
        assert download.status_code == 200
        assert "attachment" in download.headers["content-disposition"]
        document = download.json()
        assert document["entry"]["body"] == entry["body"]
        assert verify_inclusion_proof(document, key)
        steps = re.findall(r'<code class="hash">([0-9a-f]{64})</code></td>', html)
        assert steps == document["proof"]


def test_a_verification_started_from_the_page_runs_and_shows_its_result(
    gateway: Any, console_client: Any
) -> None:
    auditor = console_client("auditor")
    answer = auditor.submit(f"{PAGE}/verify", {}, page=PAGE)
    assert answer.status_code == 303, answer.text[:800]
    assert answer.headers["location"].startswith("/console/trail?verify=started")
    deadline = time.monotonic() + 60
    while True:
        status = auditor.get(f"{PAGE}/verification")
        assert status.status_code == 200
        running = status.json()["running"]
        if running["state"] != "running":
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert running["state"] == "done"
    assert running["result"]["ok"] is True
    page = auditor.get(PAGE).text
    last = page.split('id="trail-last"', 1)[1].split("</dd>", 1)[0]
    assert "passed" in last
    assert f'href="/console/trail/{running["result"]["seq"]}"' in last
    # Without the CSRF token the form is refused and nothing starts.
    refused = auditor.post(f"{PAGE}/verify", data={})
    assert refused.status_code in {400, 403}


def test_a_consumer_is_refused_every_trail_page(gateway: Any, console_client: Any) -> None:
    consumer = console_client("consumer")
    for path in (PAGE, f"{PAGE}/1", f"{PAGE}/1/proof.json", f"{PAGE}/verification"):
        answer = consumer.get(path)
        assert answer.status_code == 403, (path, answer.status_code)
        assert "trail.read" in answer.text
    assert consumer.submit(f"{PAGE}/verify", {}).status_code == 403


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        (f"{PAGE}/999999999", {}, 404, "no trail entry"),
        (f"{PAGE}/0", {}, 422, ""),
        (f"{PAGE}/abc", {}, 422, ""),
        (PAGE, {"since": "yesterday"}, 400, "not a date and time"),
        (PAGE, {"until": "2026-13-45"}, 400, "not a date and time"),
        (PAGE, {"before": "-4"}, 400, "not an entry number"),
        (PAGE, {"before": "9" * 5000}, 400, "not an entry number"),
        (PAGE, {"outcome": "maybe"}, 400, "no such outcome"),
        (PAGE, {"actor": "x" * 1000}, 400, "too long"),
        (PAGE, {"before": "5", "after": "2"}, 400, "not both"),
    ],
)
def test_bad_input_is_a_clear_error_page(
    console_client: Any, path: str, params: dict[str, str], status: int, words: str
) -> None:
    auditor = console_client("auditor")
    answer = auditor.get(path, params=params)
    assert answer.status_code == status, answer.text[:800]
    assert "text/html" in answer.headers["content-type"]
    assert words in unescape(answer.text)
