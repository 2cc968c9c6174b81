"""The console's dataset pages over real HTTP: what each role sees, the query and budget forms.

Every test signs in through the real sign-in form (``console_client``) on a
gateway served by uvicorn (the digits workspace of ``tests/serve/conftest.py``:
a budget of epsilon 10, delta 1e-4, one DP training release charged, a key per
role) and checks the pages against what the ledger recorded and what the JSON
API answers for the same key.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from typing import Any

import pytest

from veil.access import Access, Trail
from veil.ledger import Ledger, Mechanism, PrivacyEvent

pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.slow]

DATASET = "digits"
PAGE = f"/console/datasets/{DATASET}"
QUERY = f"{PAGE}/query"
COUNT = "SELECT digit, COUNT(*) AS n FROM digits GROUP BY digit"


def _owner_ledger(gateway: Any) -> Ledger:
    """The workspace's ledger as its owner (the local user who ran ``veil init``), in-process."""
    owner = Access(gateway.state.store, signing_key=gateway.state.signing_key)
    return Ledger(gateway.state.store, key=gateway.state.ledger_key, access=owner)


def _status(gateway: Any) -> Any:
    return _owner_ledger(gateway).status(DATASET, cross_check=False)


def _text(page: str) -> str:
    """The page's text with tags dropped and whitespace collapsed (what a reader sees)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _release_seqs(page: str) -> list[int]:
    table = page.split('<table class="releases">', 1)[1].split("</table>", 1)[0]
    body = table.split("<tbody>", 1)[1]
    return [int(s) for s in re.findall(r'<th scope="row">(\d+)</th>', body)]


def _burndown(page: str) -> dict[str, Any]:
    """The burn-down chart's data, as charts.js reads it."""
    block = page.split('<script type="application/json" id="burndown-data">', 1)[1]
    found: dict[str, Any] = json.loads(block.split("</script>", 1)[0])
    return found


def _query(client: Any, **fields: str) -> Any:
    data = {"sql": COUNT, "epsilon": "0.5", "delta": "0", "purpose": "console test",
            "confidence": "0.95", "mechanism": "auto", **fields}  # fmt: skip
    return client.submit(QUERY, data, page=QUERY)


# ---------------------------------------------------------------- what each role sees
def test_the_list_shows_each_visible_dataset_with_its_budget_in_words(
    gateway: Any, console_client: Any
) -> None:
    page = console_client("analyst").get("/console/datasets")
    assert page.status_code == 200, page.text[:500]
    status = _status(gateway)
    text = _text(page.text)
    assert f'href="{PAGE}"' in page.text and "1,797" in text
    assert "one row per person" in text  # digits has no privacy-unit column
    assert f'<meter min="0" max="10.0" value="{status.spent.epsilon}"' in page.text
    assert "epsilon spent" in text and "(1 release)" in text
    assert "app;dur=" in page.headers["server-timing"]


def test_the_dataset_page_shows_schema_budget_burn_down_and_releases(
    gateway: Any, console_client: Any
) -> None:
    client = console_client("analyst")
    page = client.get(PAGE)
    assert page.status_code == 200, page.text[:500]
    text = _text(page.text)
    # The declared schema: a category list and bounds.
    assert "pixel_0_0 - numeric [0, 16]" in text
    assert "digit - categorical - 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in text
    # The budget as the JSON API states it, RDP cross-check included.
    budget = client.get(f"/v1/datasets/{DATASET}/budget")  # the session cookie is no API key
    assert budget.status_code == 401
    api = gateway.client("analyst").get(f"/v1/datasets/{DATASET}/budget").json()
    rdp = api["cross_check"]["epsilon"]
    assert rdp is not None and api["spent"]["epsilon"] < rdp  # PLD is the tighter of the two
    shown = re.search(r'id="spent-rdp">epsilon ([0-9.]+)<', page.text)
    assert shown and float(shown.group(1)) == pytest.approx(rdp, rel=1e-5)
    # The burn-down: uPlot and the chart script load from this origin, the data is JSON.
    assert "/console/static/vendor/uplot/uPlot.iife.min.js" in page.text
    assert "/console/static/charts.js" in page.text
    data = _burndown(page.text)
    # Two points: the budget set (nothing spent), then the training release.
    assert data["unit"] == "epsilon" and data["budget"] == [10.0, 10.0]
    assert data["t"][0] < data["t"][1]
    assert data["spent"] == [0.0, pytest.approx(api["spent"]["epsilon"])]
    assert data["rdp"] == [0.0, pytest.approx(rdp)]
    # The releases table: the training release, by the local owner.
    assert _release_seqs(page.text) == [1]
    assert "<script>" not in page.text and " style=" not in page.text
    # No consent or retention section for a key without consent.read, and no budget form.
    assert "Consent and retention" not in text and "Set the budget" not in text
    assert 'action="/console/datasets/digits/query"' in page.text


def test_a_consumer_gets_403_on_the_dataset_pages(console_client: Any) -> None:
    client = console_client("consumer")
    for path in (PAGE, "/console/datasets", QUERY):
        page = client.get(path)
        assert page.status_code == 403, (path, page.text[:300])
        assert "dataset.read_metadata" in page.text or "budget.spend" in page.text


def test_the_query_form_says_what_the_budget_has_left(gateway: Any, console_client: Any) -> None:
    form = console_client("analyst").get(QUERY)
    assert form.status_code == 200
    left = re.search(r'id="query-left">Budget left: epsilon ([0-9.]+) of 10\.', form.text)
    assert left and float(left.group(1)) == pytest.approx(_status(gateway).remaining, rel=1e-5)
    assert 'name="sql"' in form.text and 'for="q-sql"' in form.text


def test_an_auditor_sees_the_budget_but_no_query_form(console_client: Any) -> None:
    client = console_client("auditor")
    page = client.get(PAGE)
    assert page.status_code == 200
    assert 'id="spent-pld"' in page.text and "Run query" not in page.text
    assert client.get(QUERY).status_code == 403


def test_an_unknown_or_malformed_dataset_name_is_a_4xx_page(console_client: Any) -> None:
    client = console_client("analyst")
    missing = client.get("/console/datasets/no-such-data")
    assert missing.status_code == 404 and "no-such-data" in missing.text
    assert "<h1>" in missing.text  # the console's error page, not JSON
    malformed = client.get("/console/datasets/-dash")
    assert malformed.status_code == 422, malformed.text[:300]


# ---------------------------------------------------------------- queries
def test_an_analyst_runs_a_query_and_sees_values_with_intervals(
    gateway: Any, console_client: Any
) -> None:
    client = console_client("analyst")
    before = _status(gateway).events
    answer = _query(client)
    assert answer.status_code == 200, answer.text[:800]
    table = answer.text.split('<table class="answer">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1], flags=re.DOTALL)
    assert len(rows) == 10  # one per digit
    for row in rows:
        cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>([^<]*)</td>", row)]
        digit, value, interval = cells
        low, high = (float(x.replace(",", "")) for x in interval.strip("[]").split(", "))
        assert digit in {str(d) for d in range(10)} and low < float(value.replace(",", "")) < high
    after = _status(gateway)
    assert after.events == before + 1
    remaining = re.search(r'id="answer-remaining">epsilon ([0-9.e-]+)<', answer.text)
    assert remaining and float(remaining.group(1)) == pytest.approx(after.remaining, rel=1e-5)
    assert 'id="answer-asked">epsilon 0.5, delta 0<' in answer.text
    assert "laplace" in _text(answer.text).lower()
    # The release is on the ledger under the analyst's key, with the form's purpose and charge.
    (entry,) = _owner_ledger(gateway).releases(DATASET, after=before).items
    assert entry.actor == "svc:test-analyst" and entry.purpose == "console test"
    charged = re.search(r'id="answer-charged">([0-9.e-]+)<', answer.text)
    assert charged and float(charged.group(1)) == pytest.approx(entry.epsilon, rel=1e-5)
    # The request's trail entry names what the /v1 route's entry names: the charge, the SQL's
    # digest (never its text), the purpose.
    gateway.state.spool.flush()
    rid = answer.headers["x-request-id"]
    requests = Trail(gateway.state.store).entries(action="serve.request")
    (noted,) = [e for e in requests if e.details.get("request_id") == rid]
    assert noted.dataset == DATASET and noted.purpose == "console test"
    assert noted.details["ledger_event"] == entry.id and noted.details["epsilon"] == 0.5
    assert noted.details["sql_sha256"] == hashlib.sha256(COUNT.encode()).hexdigest()
    assert "GROUP BY" not in json.dumps(noted.details)


def test_an_exhausted_budget_is_a_403_that_says_what_is_left(
    gateway: Any, console_client: Any
) -> None:
    client = console_client("analyst")
    left = _status(gateway).remaining
    events = _status(gateway).events
    refused = _query(client, epsilon=f"{left + 0.25:.6f}")
    assert refused.status_code == 403, refused.text[:800]
    shown = re.search(r'id="budget-left">epsilon ([0-9.e-]+)<', refused.text)
    assert shown and float(shown.group(1)) == pytest.approx(left, rel=1e-5)
    text = _text(refused.text)
    assert "Refused: the budget cannot pay for this query" in text
    assert f"epsilon {left + 0.25:.6g}" in text  # what was asked
    assert _status(gateway).events == events  # nothing charged
    # The form is kept as typed, to be lowered and sent again.
    assert COUNT in html.unescape(refused.text)


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"sql": "SELEC COUNT(*) FROM t"}, 400, ""),
        ({"sql": "SELECT AVG(no_such_column) FROM t"}, 400, "no_such_column"),
        ({"epsilon": "lots"}, 422, "epsilon is not a number"),
        ({"epsilon": "-1"}, 422, "epsilon"),
        ({"mechanism": "magic"}, 422, "mechanism"),
        ({"delta": "1e-5", "confidence": "2"}, 422, "confidence"),
    ],
)
def test_a_bad_query_is_a_4xx_with_the_librarys_message_and_the_form_kept(
    gateway: Any, console_client: Any, fields: dict[str, str], status: int, says: str
) -> None:
    client = console_client("analyst")
    events = _status(gateway).events
    refused = _query(client, **fields)
    assert refused.status_code == status, refused.text[:800]
    assert 'class="notice notice-error"' in refused.text and says in html.unescape(refused.text)
    for value in fields.values():
        assert html.escape(value) in refused.text  # kept in the form
    assert _status(gateway).events == events


@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_a_query_without_the_csrf_token_is_refused_and_charges_nothing(
    gateway: Any, console_client: Any, token: str | None
) -> None:
    client = console_client("analyst")
    events = _status(gateway).events
    data = {"sql": COUNT, "epsilon": "0.5"}
    if token is not None:
        data["csrf"] = token
    refused = client.post(QUERY, data=data)
    assert refused.status_code == 403, refused.text[:500]
    assert _status(gateway).events == events
    # The owner's budget form likewise: refused, the budget unchanged.
    form = {"epsilon": "50", "delta": "1e-4", "reason": "forged"}
    if token is not None:
        form["csrf"] = token
    forged = console_client("owner").post(f"{PAGE}/budget", data=form)
    assert forged.status_code == 403, forged.text[:500]
    assert _status(gateway).budget.epsilon == 10.0


# ---------------------------------------------------------------- budget
def test_an_owner_sets_the_budget_and_an_analyst_cannot(gateway: Any, console_client: Any) -> None:
    analyst = console_client("analyst")
    form = {"epsilon": "12", "delta": "1e-4", "reason": "more studies approved"}
    refused = analyst.submit(f"{PAGE}/budget", form, page=PAGE)
    assert refused.status_code == 403 and "budget.set" in refused.text
    assert _status(gateway).budget.epsilon == 10.0

    owner = console_client("owner")
    page = owner.get(PAGE)
    assert "Set the budget" in page.text
    done = owner.submit(f"{PAGE}/budget", form, page=PAGE)
    assert done.status_code == 303 and done.headers["location"] == f"{PAGE}?done=budget"
    assert _status(gateway).budget.epsilon == 12.0
    shown = owner.get(done.headers["location"])
    assert "The budget was set." in shown.text and "epsilon 12, delta 0.0001" in _text(shown.text)
    assert 'id="b-epsilon" name="epsilon" type="text" value="12"' in shown.text  # the form, too
    # The burn-down's budget line ends at the new budget, after the last release.
    series = _burndown(shown.text)
    assert series["budget"][-2:] == [10.0, 12.0] and series["spent"][-1] == series["spent"][-2]

    # A change without a reason is the library's refusal, on the page, with the form kept.
    again = owner.submit(f"{PAGE}/budget", {"epsilon": "11", "delta": "1e-4"}, page=PAGE)
    assert again.status_code == 400 and "needs a reason" in again.text
    assert 'value="11"' in again.text and _status(gateway).budget.epsilon == 12.0
    bad = owner.submit(f"{PAGE}/budget", {"epsilon": "x", "reason": "r"}, page=PAGE)
    assert bad.status_code == 422 and "epsilon is not a number" in bad.text


# ---------------------------------------------------------------- releases
def _charge(gateway: Any, n: int, *, purpose: str, operation: str = "query") -> None:
    ledger = _owner_ledger(gateway)
    mechanism = Mechanism.laplace(scale=1000.0, sensitivity=1.0)
    events = [
        (DATASET, PrivacyEvent(f"test release {i}", (mechanism,), operation=operation))
        for i in range(n)
    ]
    ledger.charge_many(events, purpose=purpose)


def test_the_releases_filter_and_keyset_pages(gateway: Any, console_client: Any) -> None:
    _charge(gateway, 30, purpose="statistics: weekly report")
    _charge(gateway, 30, purpose="research: study", operation="mechanism")
    client = console_client("auditor")
    page = client.get(PAGE)
    newest = _release_seqs(page.text)
    assert newest == list(range(61, 11, -1))  # the newest 50, newest first
    older = re.search(r'href="([^"]+)" rel="next"', page.text)
    assert older
    second = client.get(html.unescape(older.group(1)))
    assert _release_seqs(second.text) == list(range(11, 0, -1))
    assert 'rel="next"' not in second.text and 'rel="prev"' in second.text

    weekly = client.get(PAGE, params={"purpose": "WEEKLY"})
    assert _release_seqs(weekly.text) == list(range(31, 1, -1))
    assert "Releases, newest first (61 in all)" in _text(page.text)
    assert "match the filters" not in weekly.text  # not counted: it would read every row
    queries = client.get(PAGE, params={"operation": "query"})
    assert _release_seqs(queries.text) == list(range(31, 1, -1))
    mech = client.get(PAGE, params={"operation": "mechanism", "mechanism": "laplace"})
    assert _release_seqs(mech.text) == list(range(61, 31, -1))
    nobody = client.get(PAGE, params={"actor": "svc:nobody"})
    assert nobody.status_code == 200 and "No release matches." in nobody.text
    training = client.get(PAGE, params={"mechanism": "poisson_subsampled_gaussian"})
    assert _release_seqs(training.text) == [1]
    later = client.get(PAGE, params={"since": "2999-01-01"})
    assert "No release matches." in later.text

    bad = client.get(PAGE, params={"since": "yesterday"})
    assert bad.status_code == 400 and "since is not a date" in bad.text
    assert 'value="yesterday"' in bad.text
    empty = client.get(PAGE, params={"since": "2026-01-02", "until": "2026-01-01"})
    assert empty.status_code == 400 and "until is not after since" in empty.text


# ---------------------------------------------------------------- consent and retention
def test_consent_and_retention_are_shown_to_roles_that_may_read_them(
    gateway: Any, console_client: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    from veil.data import Catalog, Consent
    from veil.governance import set_policy

    monkeypatch.setenv("VEIL_VAULT_KEY", "5a" * 32)  # the vault's master key, held outside
    state = gateway.state
    owner = Access(state.store, signing_key=state.signing_key)
    catalog = Catalog(
        state.store, state.workspace.settings, access=owner, workspace=state.workspace
    )
    source = tmp_path / "visits.csv"
    lines = ["pid,visit_date,age"] + [f"P-{i:03d},2026-0{1 + i % 6}-15,{20 + i}" for i in range(12)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    catalog.add(source, name="visits", managed=True, privacy_unit="pid", bounds={"age": (0, 120)})
    consent = Consent(catalog)
    consent.enable("visits", "withdrawn")
    consent.record("visits", "P-001", "statistics", "granted")
    consent.record("visits", "P-002", "statistics", "granted")
    consent.record("visits", "P-003", "research", "withdrawn")
    set_policy(catalog, "visits", older_than_days=365, date_column="visit_date")

    for role in ("owner", "auditor"):
        page = console_client(role).get("/console/datasets/visits")
        assert page.status_code == 200, page.text[:500]
        text = _text(page.text)
        assert "Consent and retention" in text and "count as withdrawn" in text
        assert "statistics 2 0" in text and "research 0 1" in text
        assert "rows older than 365 days by visit_date" in text
        assert "managed (version 1)" in text and "No budget is set" in text
    analyst = console_client("analyst")
    page = analyst.get("/console/datasets/visits")
    assert page.status_code == 200
    assert "Consent and retention" not in page.text and "visit_date" in page.text  # the schema

    # A zCDP budget is shown in rho, with a bar and no RDP cross-check (nothing to cross-check).
    from veil.ledger import Budget

    _owner_ledger(gateway).set_budget("visits", Budget(rho=0.5))
    page = analyst.get("/console/datasets/visits")
    text = _text(page.text)
    assert page.status_code == 200 and "Budget rho 0.5 (zCDP)" in text and "Spent rho 0" in text
    assert 'max="0.5"' in page.text and "RDP cross-check" not in text
