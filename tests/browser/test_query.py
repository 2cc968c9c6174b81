"""An analyst's DP query from the console form, to the budget's refusal; and the keyboard."""

from __future__ import annotations

import math
import re

import pytest
from tests.browser._browser import expect, labelled, tab_to
from tests.serve.conftest import DATASET

pytestmark = pytest.mark.slow

SQL = f"SELECT digit, COUNT(*) AS n FROM {DATASET} GROUP BY digit"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?")


def _number(text: str) -> float:
    """The first number in ``text`` (thousands separators allowed)."""
    found = NUMBER.search(text)
    assert found, f"no number in {text!r}"
    return float(found.group().replace(",", ""))


def _remaining(console) -> float:
    """What the budget has left, from the JSON API (the ledger's own figure)."""
    response = console.api("analyst").get(
        f"/v1/datasets/{DATASET}/budget", params={"cross_check": "false"}
    )
    assert response.status_code == 200, response.text
    return float(response.json()["remaining"])


def _run_query(page, epsilon: float) -> int:
    """Fill and submit the query form on the page; the POST's status."""
    form = page.get_by_role("form", name=re.compile("DP query", re.IGNORECASE))
    form.get_by_label("SQL").fill(SQL)
    form.get_by_label("Epsilon").fill(str(epsilon))
    form.get_by_label("Purpose").fill("browser test: class balance")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        form.get_by_role("button", name="Run query").click()
    page.wait_for_load_state()
    return posted.value.status


def test_an_analyst_queries_until_the_budget_refuses(console, page, shoot):
    console.sign_in(page, "analyst")
    page.goto(f"/console/datasets/{DATASET}/query")
    left = _remaining(console)
    epsilon = 3.0
    answered = 0
    while True:
        status = _run_query(page, epsilon)
        if status != 200:
            break
        answered += 1
        answer = page.get_by_role("table").filter(has=page.locator("caption", has_text="Noisy"))
        expect(answer).to_be_visible()
        # A row per digit, each count with its interval "[low, high]".
        assert answer.locator("tbody tr").count() == 10
        intervals = answer.locator("td.ci").all_inner_texts()
        assert len(intervals) == 10 and all(re.search(r"\d.*\d", t) for t in intervals)
        charged = _number(page.locator("#answer-charged").inner_text())
        assert math.isclose(charged, epsilon, rel_tol=1e-3), charged  # the accountant's figure
        after = _remaining(console)
        assert after < left  # charged (the accountant composes: not always a plain sum)
        shown = _number(page.locator("#answer-remaining").inner_text().split()[-1])
        assert math.isclose(shown, after, abs_tol=1e-3), (shown, after)
        left = after
        if answered == 1:
            shoot(page, "query-answer")
        assert answered < 10, "the budget never refused"
    assert status == 403
    assert answered >= 1 and left < epsilon  # refused only once the budget could not pay
    refusal = page.get_by_role("alert")
    expect(refusal).to_contain_text(re.compile("budget", re.IGNORECASE))
    shown_left = _number(page.locator("#budget-left").inner_text().split()[-1])
    assert math.isclose(shown_left, left, abs_tol=1e-3), (shown_left, left)
    assert math.isclose(_remaining(console), left)  # the refusal charged nothing
    shoot(page, "query-refused")


def test_the_query_form_works_with_the_keyboard_only(console, page):
    console.sign_in(page, "analyst")
    page.goto(f"/console/datasets/{DATASET}/query")
    left = _remaining(console)
    tab_to(page, "the SQL field", labelled("SQL"))
    page.keyboard.type(SQL)
    tab_to(page, "the epsilon field", labelled("epsilon"))
    page.keyboard.type("0.5")
    tab_to(
        page, "the Run query button", "el.type === 'submit' && /run query/i.test(el.textContent)"
    )
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.keyboard.press("Enter")
    page.wait_for_load_state()
    assert posted.value.status == 200
    assert _remaining(console) < left  # answered and charged
    charged = _number(page.locator("#answer-charged").inner_text())
    assert math.isclose(charged, 0.5, rel_tol=1e-3), charged
