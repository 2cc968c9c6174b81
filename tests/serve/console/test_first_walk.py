"""A new user's first walk through the console (issue 25): a fresh workspace, every page.

``veil init``, a small clinic-visits CSV with odd column names (markup in one,
spaces, a dollar sign), a budget far larger than anyone would set, one key;
the gateway served by uvicorn; signed in through the form like a person;
every page read for what a person should never see (a traceback, None, nan,
an empty dict, a number in e-notation) and for live markup.
"""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from tests.serve.console.conftest import sign_in
from tests.serve.console.test_outsider import _no_markup_from, _text

pytestmark = [
    pytest.mark.xdist_group("serve"),
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:uvicorn"),
]

CLINIC = """Patient ID,visit date,<b>Ward</b>,Age (yrs),cost $,Diagnosis/notes
1,2026-01-02,A&E,34,120.5,"flu, mild"
2,2026-01-03,Cardio,71,9999999999.99,chest pain
3,2026-01-03,A&E,5,30,"<script>alert(1)</script>"
4,2026-01-04,Ortho,45,,sprain
5,2026-01-05,Cardio,88,250,
6,2026-01-06,Ortho,19,80,fracture
"""


def test_a_new_workspace_reads_well_on_every_page(tmp_path: Path) -> None:
    """``veil init``, an odd CSV, a huge budget, a key: every page, as a first user sees it."""
    from tests._cli import environment
    from tests.serve.conftest import Served, _serve_in_thread, veil

    home = tmp_path / "clinic" / ".veil"
    data = tmp_path / "visits.csv"
    data.write_text(CLINIC, encoding="utf-8")
    with environment({"VEIL_HOME": str(home), "VEIL_DATABASE_URL": None, "VEIL_KEY": None}):
        veil("init")
        veil("datasets", "add", str(data), "--name", "clinic")
        veil("budget", "set", "clinic", "--epsilon", "1e12", "--delta", "1e-5")
        token = json.loads(veil("keys", "create", "nurse", "--role", "owner", "--json"))["token"]
    served = _serve_in_thread(Served(home, {"owner": token}), None)
    try:
        client = sign_in(served.url, token)
        pages = {}
        for path in (
            "/console",
            "/console/datasets",
            "/console/datasets/clinic",
            "/console/datasets/clinic/query",
            "/console/models",
            "/console/trail",
            "/console/trail/1",
            "/console/access",
        ):
            page = client.get(path)
            assert page.status_code == 200, (path, _text(page.text)[:400])
            _no_markup_from(page, path)
            pages[path] = _text(page.text)
            for shown in (" None ", " nan ", " inf ", " {} ", " [] ", "Traceback", "e+1"):
                assert shown not in f" {pages[path]} ", (path, shown)
        assert "No model" in pages["/console/models"]
        assert "No release" in pages["/console/datasets/clinic"]
        answer = client.post(
            "/console/datasets/clinic/query",
            data={"csrf": client.csrf(), "sql": "SELECT COUNT(*) FROM clinic", "epsilon": "0.5"},
        )
        assert answer.status_code == 200, _text(answer.text)[:600]
        left = _text(answer.text).split("Budget left:", 1)[1][:80]
        assert "e+" not in left and "999,999,999,999.5" in left, left
        grouped = client.post(
            "/console/datasets/clinic/query",
            data={
                "csrf": client.csrf(),
                "sql": 'SELECT "<b>Ward</b>", COUNT(*) FROM clinic GROUP BY "<b>Ward</b>"',
                "epsilon": "1",
                "delta": "1e-6",
            },
        )
        assert grouped.status_code == 200, _text(grouped.text)[:600]
        _no_markup_from(grouped, "grouped answer")
        for page in (grouped.text, client.get("/console/datasets/clinic").text):
            assert "<b>Ward</b>" not in page and "&lt;b&gt;Ward&lt;/b&gt;" in page
        assert "No group is shown" in _text(grouped.text)
        for url, form in (
            ("/console/datasets/clinic/budget", {"epsilon": "", "reason": "first try"}),
            ("/console/datasets/clinic/query", {"sql": "", "epsilon": ""}),
        ):
            empty = client.post(url, data={"csrf": client.csrf(), **form})
            assert empty.status_code == 422, (url, empty.status_code)
            words = _text(empty.text)
            assert "is required" in words and "{'" not in words, words[-600:]
        verify = client.post("/console/trail/verify", data={"csrf": client.csrf("/console/trail")})
        assert verify.status_code == 303
        deadline = time.monotonic() + 60
        while client.get("/console/trail/verification").json()["running"]["state"] == "running":
            assert time.monotonic() < deadline, "the verification did not finish"
            time.sleep(0.2)
        for path in ("/console/trail", "/console/trail/1"):
            # the entry's stored body (a <pre> of its JSON) keeps its own ISO times
            words = _text(re.sub(r"<pre.*?</pre>", "", client.get(path).text, flags=re.DOTALL))
            assert "Last full verification passed" in words or path != "/console/trail", words
            raw = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d\S*", words)
            assert not raw, (path, raw)  # times read as elsewhere: 2026-12-06 10:00:00 UTC
        client.close()
    finally:
        served.stop()


def test_the_card_table_shows_values_as_stored_not_as_python(console_client: Any) -> None:
    page = console_client("auditor").get("/console/models/digits-lr")
    assert page.status_code == 200
    table = page.text.split('<table class="card-fields">', 1)[1].split("</table>", 1)[0]
    cells = [html.unescape(c) for c in re.findall(r'<td class="mono">(.*?)</td>', table, re.DOTALL)]
    assert "true" in cells, cells  # "private" and "secure_rng", as privacy_card.json has them
    assert not {"True", "False", "None"} & set(cells), cells
    assert not [c for c in cells if c.startswith(("{'", "['"))], cells
