"""`veil bench serve --parts console`: the harness's parsing, and the whole part at a tiny size.

The end-to-end run checks what must hold on any machine: the workspace holds exactly
the ledger events and trail entries asked for, made through the ledger and the trail
(the chain and the tree verify, the charges carry the analysts' names), every console
page answered 200 with a ``Server-Timing`` figure, the JSON and the table were written,
and ``--reuse`` serves the kept workspace again without rebuilding it. The timings are
the benchmark's, not the test's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from veil.access import Trail
from veil.bench._serve_console import _next_link, server_ms
from veil.cli._app import main
from veil.ledger import Ledger
from veil.store.tables import PrivacyEventRow
from veil.workspace import Workspace


def test_server_timing_header_is_read() -> None:
    assert server_ms({"server-timing": "app;dur=12.5"}) == 12.5
    assert server_ms({"server-timing": 'db;dur=3, app;desc="gateway";dur=41'}) == 41.0
    assert server_ms({"server-timing": "db;dur=3"}) is None
    assert server_ms({}) is None


def test_the_pagers_next_link_is_found() -> None:
    html = (
        '<nav><a href="/console/datasets/adult?actor=x&amp;before=90" rel="prev">Newer</a>'
        '<a href="/console/datasets/adult?actor=x&amp;before=40" rel="next">Older</a></nav>'
    )
    found = _next_link(html, "http://127.0.0.1:9/console/datasets/adult?actor=x")
    assert found == "http://127.0.0.1:9/console/datasets/adult?actor=x&before=40"
    assert _next_link('<a href="/console">Home</a>', "http://127.0.0.1:9/") is None


def test_sizes_that_cannot_be_built_are_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_data: Path
) -> None:
    output = tmp_path / "b.json"
    args = ["bench", "serve", "--parts", "console", "--data", str(shared_data), "-o", str(output)]
    code = main([*args, "--ledger-events", "500", "--trail-entries", "200"])
    captured = capsys.readouterr()
    assert code != 0
    assert "bad console benchmark sizes" in captured.err + captured.out
    assert not output.exists()
    assert main([*args, "--page-repeats", "0"]) != 0
    assert "must be positive" in "".join(capsys.readouterr())


@pytest.mark.slow
def test_console_part_end_to_end_and_reuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_data: Path
) -> None:
    kept = tmp_path / "kept"
    output = tmp_path / "bench-serve.json"
    args = ["bench", "serve", "--parts", "console", "--quick", "--data", str(shared_data),
            "--ledger-events", "250", "--trail-entries", "2000", "--page-repeats", "2",
            "--reuse", str(kept), "-o", str(output)]  # fmt: skip
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err + captured.out
    report = json.loads(output.read_text(encoding="utf-8"))
    console = report["console"]
    assert console["reused"] is False
    assert (console["ledger_events"], console["trail_entries"]) == (250, 2000)
    assert set(report["goals"]) == {"console"}
    assert "Console pages" in captured.out and "Goals (issues 24 and 25)" in captured.out
    pages = {row["page"]: row for row in console["pages"]}
    assert len(pages) == 14
    for row in pages.values():
        assert row["status"] == 200, row
        assert row["timed_by_server"] == row["requests"] == 2, row
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["max_ms"]
    assert report["goals"]["console"]["met"] in (True, False)

    # The ledger and the trail were written through their APIs: both verify.
    home = Path(json.loads((kept / "manifest.json").read_text())["home"])
    ledger = Ledger.open(Workspace(home))
    try:
        checked = ledger.verify("adult")
        assert checked["ok"], checked["problems"]
        # 250 built, plus three queries for the query page and three before the dataset
        # page "after a new release" (one warm-up, two timed, each).
        assert checked["events"] == 250 + 3 + 3
        report_ = Trail(ledger.store).verify()
        assert report_.ok, report_.problems
        assert report_.ledger_events_checked == 250 + 3 + 3
        with ledger.store.session() as session:
            actors = set(session.scalars(select(PrivacyEventRow.actor)))
        assert {"svc:bench-analyst-0", "svc:bench-analyst-1", "svc:bench-analyst-2"} <= actors
    finally:
        ledger.store.dispose()

    # --reuse serves the kept workspace again: nothing is rebuilt.
    assert main(args) == 0
    again = json.loads(output.read_text(encoding="utf-8"))["console"]
    assert again["reused"] is True
    assert again["build_seconds"] == console["build_seconds"]
