"""A model's audit report is a file anyone who can write the model folder may change.

The console reads ``audit-report.json`` for the model page and serves
``audit-report.html`` in a sandboxed frame; these tests put markup in every
text of a real report, and hand the page reports malformed in ten ways (the
wrong types, non-numbers in a ROC curve, NaN): the page shows text, never a
500, and the HTML report runs under its own policy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.serve.console.conftest import ConsoleClient
from tests.serve.console.test_outsider import MODEL, X, _no_markup_from, _text

pytestmark = [
    pytest.mark.xdist_group("serve"),
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:uvicorn"),
]


def test_a_hostile_audit_report_is_shown_as_text(
    console_client: Any, gateway: Any, serve_template: Any, tmp_path: Path
) -> None:
    from tests.serve._audit_report import make_report

    _, report_json = make_report(serve_template.home, tmp_path)

    def poison(value: Any) -> Any:
        if isinstance(value, str):
            return X + value
        if isinstance(value, list):
            return [poison(v) for v in value]
        if isinstance(value, dict):
            return {k: poison(v) for k, v in value.items()}
        return value

    folder = gateway.home / "models" / MODEL
    raw = json.loads(report_json.read_text(encoding="utf-8"))
    (folder / "audit-report.json").write_text(json.dumps(poison(raw)), encoding="utf-8")
    (folder / "audit-report.html").write_text(f"<p>{X}</p><script>alert(4)</script>", "utf-8")
    client: ConsoleClient = console_client("auditor")
    page = client.get(f"/console/models/{MODEL}")
    assert page.status_code == 200, _text(page.text)[:800]
    _no_markup_from(page, "model page with a hostile report")
    assert "<script>alert(1)" in _text(page.text)
    report = client.get(f"/console/models/{MODEL}/report")
    assert report.status_code == 200
    policy = report.headers["content-security-policy"]
    assert "sandbox" in policy and "default-src 'none'" in policy and "script-src" not in policy


@pytest.mark.parametrize(
    "report",
    [
        {"membership": "not a list"},
        {"membership": ["not an object", 3, None]},
        {"membership": [{"attack": "t", "roc": {"fpr": ["x", None], "tpr": [0.5, "y"]}}]},
        {"membership": [{"attack": "t", "roc": {"fpr": [0.0, float("nan"), 1.0],
                                                 "tpr": [0.0, float("inf"), 1.0]}}]},
        {"membership": [{"attack": "t", "roc": {"fpr": [0.0, 1.0], "tpr": [0.0]}}]},
        {"membership": [{"attack": "t", "roc": {"fpr": 5, "tpr": "ab"}}]},
        {"membership": [{"attack": "t", "auc_ci95": "wide", "settings": "x",
                         "epsilon_lower_bound": [1]}]},
        {"claimed": "x", "verdicts": {"a": 1}, "notes": "one note"},
        {"membership": 5, "verdicts": 5, "notes": 5},
        {"membership": [{"attack": "t", "auc": float("nan"), "advantage": float("inf")}]},
        [1, 2, 3],
    ],
    ids=lambda r: json.dumps(r)[:40],
)  # fmt: skip
def test_a_malformed_audit_report_is_a_note_on_the_page_not_a_500(
    console_client: Any, gateway: Any, report: Any
) -> None:
    folder = gateway.home / "models" / MODEL
    (folder / "audit-report.json").write_text(json.dumps(report), encoding="utf-8")
    page = console_client("auditor").get(f"/console/models/{MODEL}")
    assert page.status_code == 200, _text(page.text)[:600]
    _no_markup_from(page, "model page with a malformed report")
    assert " nan " not in f" {_text(page.text)} " and "NaN" not in page.text
    answer = gateway.client("auditor").get(f"/v1/models/{MODEL}/audit")
    assert answer.status_code < 500, answer.text[:400]  # the same reader behind /v1
    if isinstance(report, dict) and isinstance(report.get("notes"), str):
        assert "one note" in _text(page.text)  # one note, not one per letter
