"""The console's model pages over real HTTP: card, audit report, policy, usage, alerts, refusals.

Every test signs in through the real sign-in form (``console_client``) on a
gateway served by uvicorn (the digits workspace of ``tests/serve/conftest.py``,
with the DP logistic regression ``digits-lr`` and a key per role), provokes
what the page shows (a real audit report copied into the model's folder,
predictions, a probing key that trips the attack monitor) and checks the page
against the trail and the JSON API.
"""

from __future__ import annotations

import html
import re
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
PAGE = f"/console/models/{MODEL}"
REPORT = f"{PAGE}/report"


def _text(page: str) -> str:
    """The page's text with tags dropped and whitespace collapsed (what a reader sees)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _section(page: str, heading_id: str) -> str:
    return page.split(f'id="{heading_id}"', 1)[1].split("</section>", 1)[0]


def _key_id(gateway: Any, role: str) -> str:
    parsed = parse_key(gateway.keys[role])
    assert parsed is not None
    return parsed[0]


def _probe(gateway: Any, role: str, start: int) -> None:
    """30 copies of one digit in one request: a membership prober's near-duplicates."""
    detail = gateway.client("analyst").get(f"/v1/models/{MODEL}").json()
    names = [c["name"] for c in detail["inputs"]["columns"]]
    record = dict(zip(names, map(float, load_digits().data[start]), strict=True))
    answer = gateway.client(role).post(
        f"/v1/models/{MODEL}/predict", json={"records": [record] * 30}
    )
    assert answer.status_code == 200, answer.text
    gateway.state.spool.flush()


# ---------------------------------------------------------------- the list
def test_the_list_shows_each_readable_model_with_its_set_kind_epsilon_and_serving(
    gateway, console_client
):
    page = console_client("analyst").get("/console/models")
    assert page.status_code == 200, page.text[:500]
    api = gateway.client("analyst").get("/v1/models").json()["models"]
    row = page.text.split('<table class="models-list">', 1)[1].split("</table>", 1)[0]
    assert f'href="{PAGE}"' in row
    text = _text(row)
    (model,) = api
    assert f"{MODEL} {model['dataset']} {model['architecture']} {model['epsilon']:.3f}" in text
    assert "yes label" in text and "none yet" in text


# ---------------------------------------------------------------- one model
def test_an_auditor_sees_the_card_the_verdicts_the_roc_and_the_report_frame(
    gateway, console_client, serve_template, tmp_path_factory
):
    auditor = console_client("auditor")
    before = auditor.get(PAGE)
    assert before.status_code == 200, before.text[:500]
    assert "No audit report yet." in _text(_section(before.text, "audit-h"))
    assert "<iframe" not in before.text
    assert auditor.get(REPORT).status_code == 404

    install_report(make_report(serve_template.home, tmp_path_factory.mktemp("audit")), gateway.home)
    page = auditor.get(PAGE)
    assert page.status_code == 200, page.text[:500]
    # the privacy card: every line of `veil models show`, and every stored field
    card = gateway.client("auditor").get(f"/v1/models/{MODEL}").json()["card"]
    card_text = _text(_section(page.text, "card-h"))
    assert f"epsilon {card['epsilon']:.4g} at delta {card['delta']:g}" in card_text
    assert f"noise multiplier {card['noise_multiplier']:.4g}" in card_text
    for field in card:
        assert f"<code>{field}</code>" in page.text, field
    # the verdicts, as the report's JSON has them
    audit = gateway.client("auditor").get(f"/v1/models/{MODEL}/audit").json()["report"]
    verdicts = page.text.split('<table class="verdicts">', 1)[1].split("</table>", 1)[0]
    assert "membership" in [v["attack"] for v in audit["verdicts"]]
    for verdict in audit["verdicts"]:
        assert verdict["headline"] in _text(verdicts)
        assert f"verdict-{verdict['level']}" in verdicts
    (threshold,) = audit["membership"]
    membership = page.text.split('<table class="membership">', 1)[1].split("</table>", 1)[0]
    assert f"threshold no reference models {threshold['auc']:.3f}" in _text(membership)
    # the ROC: one curve per attack, with its text equivalent
    assert page.text.count('<polyline class="roc-line') == 1
    assert f"threshold (AUC {threshold['auc']:.3f})" in _text(page.text)
    # the report's own document, in a frame that may run nothing
    frame = re.search(r"<iframe [^>]*>", page.text)
    assert frame, "no report frame"
    assert f'src="{REPORT}"' in frame.group(0) and 'sandbox=""' in frame.group(0)
    report = auditor.get(REPORT)
    assert report.status_code == 200
    assert "Privacy audit of" in report.text
    csp = report.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; img-src data:; style-src 'unsafe-inline'")
    assert "sandbox" in csp and "frame-ancestors 'self'" in csp and "script-src" not in csp
    assert report.headers["x-content-type-options"] == "nosniff"
    # the console's own pages keep the console's CSP
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_the_policy_is_the_callers_own_and_other_keys_are_for_watchers_only(
    gateway, console_client
):
    analyst = console_client("analyst")
    page = analyst.get(PAGE)
    assert page.status_code == 200, page.text[:500]
    policy = _text(_section(page.text, "policy-h"))
    assert "answers label: the most likely class only" in policy
    assert "records per key 500" in policy and "rate 20/second" in policy
    usage = _text(_section(page.text, "usage-h"))
    assert f"This key ( {_key_id(gateway, 'analyst')} ) has had 0 records answered" in usage
    assert '<table class="keys">' not in page.text
    assert '<table class="alerts">' not in page.text
    assert "shown to owners and auditors" in _text(_section(page.text, "alerts-h"))
    live = analyst.get(f"{PAGE}/live").json()
    assert live["mine"]["used"] == 0 and "keys" not in live


def test_usage_by_key_is_live_and_matches_each_keys_own_count(gateway, console_client):
    client = gateway.client("consumer")
    for start in (0, 10):
        rows = load_digits().data[start : start + 4]
        detail = gateway.client("analyst").get(f"/v1/models/{MODEL}").json()
        names = [c["name"] for c in detail["inputs"]["columns"]]
        records = [dict(zip(names, map(float, r), strict=True)) for r in rows]
        assert client.post(f"/v1/models/{MODEL}/predict", json={"records": records}).is_success
    gateway.state.spool.flush()
    owner = console_client("owner")
    page = owner.get(PAGE)
    consumer = _key_id(gateway, "consumer")
    row = re.search(rf'<tr data-key="{consumer}">(.*?)</tr>', page.text, re.DOTALL)
    assert row, "no row for the consumer's key"
    own = client.get(f"/v1/models/{MODEL}/usage").json()
    assert own["used"] == 8
    assert _text(row.group(1)).split()[-5:] == ["label", "8", "500", "492", "20/second"]
    live = owner.get(f"{PAGE}/live")
    assert live.headers["content-type"].startswith("application/json")
    keys = {k["key_id"]: k for k in live.json()["keys"]}
    assert (keys[consumer]["used"], keys[consumer]["left"]) == (8, 492)


def test_alerts_appear_newest_first_once_the_monitor_raises_them(gateway, console_client):
    auditor = console_client("auditor")
    assert "No alert." in _text(_section(auditor.get(PAGE).text, "alerts-h"))
    _probe(gateway, "consumer", 3)
    _probe(gateway, "analyst", 7)
    entries = Trail(gateway.state.store).entries(action="serve.alert")
    assert len(entries) == 2
    page = auditor.get(PAGE)
    table = page.text.split('<table class="alerts"', 1)[1].split("</table>", 1)[0]
    seqs = [int(s) for s in re.findall(r'href="/console/trail/(\d+)"', table)]
    assert seqs == [entries[1].seq, entries[0].seq]
    text = _text(table)
    assert _key_id(gateway, "consumer") in text and _key_id(gateway, "analyst") in text
    assert text.count("probing") == 2
    assert auditor.get(f"{PAGE}/live").json()["newest_alert"] == entries[1].seq
    # paged: older than the newest shows only the first alert, and a link back
    older = auditor.get(PAGE, params={"before": entries[1].seq})
    table = older.text.split('<table class="alerts"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'href="/console/trail/(\d+)"', table) == [str(entries[0].seq)]
    assert 'rel="prev"' in older.text


# ---------------------------------------------------------------- refusals
def test_a_key_without_model_read_is_refused_every_model_page(gateway, console_client):
    consumer = console_client("consumer")
    for path in ("/console/models", PAGE, REPORT, f"{PAGE}/live"):
        page = consumer.get(path)
        assert page.status_code == 403, (path, page.status_code)
        assert "model.read" in _text(page.text)
    gateway.state.spool.flush()
    refused = [
        e
        for e in Trail(gateway.state.store).entries(action="serve.request")
        if e.outcome == "refused" and str(e.details.get("route", "")).startswith("/console/models")
    ]
    assert len(refused) == 4


def test_without_a_session_a_model_page_sends_to_sign_in(gateway):
    import httpx

    with httpx.Client(base_url=gateway.url, follow_redirects=False) as anonymous:
        answer = anonymous.get(PAGE)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/sign-in?next={PAGE}"


@pytest.mark.parametrize("path", ["/console/models/no-such-model", "/console/models/..%2Fx"])
def test_an_unknown_or_malformed_model_is_a_4xx_page(console_client, path):
    page = console_client("auditor").get(path)
    assert page.status_code in (404, 422), page.status_code
    assert "<h1" in page.text


def test_a_bad_alert_page_is_a_422_not_a_500(console_client):
    page = console_client("auditor").get(PAGE, params={"before": "-3"})
    assert page.status_code == 422
    assert "before" in _text(page.text)


def test_a_key_limited_to_another_dataset_sees_no_model_of_this_one(gateway):
    from tests.serve.console.conftest import sign_in

    operator = gateway.state.operator
    _, elsewhere = operator.create_key("elsewhere", "analyst", "other-dataset")
    _, here = operator.create_key("digits-auditor", "auditor", "digits")
    outsider = sign_in(gateway.url, elsewhere)
    listed = outsider.get("/console/models")
    assert listed.status_code == 200, listed.text[:500]
    assert MODEL not in listed.text and "No model trained on a dataset" in _text(listed.text)
    for path in (PAGE, REPORT, f"{PAGE}/live"):
        page = outsider.get(path)
        assert page.status_code == 403, (path, page.status_code)
        assert "model.read" in _text(page.text)
    # an auditor of this dataset only is a watcher of its models
    auditor = sign_in(gateway.url, here)
    page = auditor.get(PAGE)
    assert page.status_code == 200, page.text[:500]
    assert '<table class="keys">' in page.text and "No alert." in _text(page.text)
    outsider.close()
    auditor.close()
