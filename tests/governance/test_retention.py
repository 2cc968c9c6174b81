"""Retention policies and runs: due rows removed once, dry runs write nothing, bad policies refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest
from sqlalchemy import func, select
from tests.governance._data import write_csv

from veil.errors import ConflictError, InvalidInputError, NotFoundError
from veil.governance import policies, run_retention, set_policy
from veil.store.tables import DatasetVersionRow, ErasureRow, RetentionPolicyRow

NOW = datetime(2026, 6, 2, tzinfo=UTC)  # a day after the newest visit


def _counts(catalog) -> tuple[int, int]:
    """(versions, erasure records): what a run writes."""
    with catalog.store.session() as session:
        versions = session.scalar(select(func.count()).select_from(DatasetVersionRow))
        erasures = session.scalar(select(func.count()).select_from(ErasureRow))
    return int(versions or 0), int(erasures or 0)


def test_a_run_removes_the_rows_past_their_age_once(catalog_of):
    catalog = catalog_of()
    set_policy(catalog, "visits", older_than_days=365, date_column="visit_date")
    frame = catalog.load_frame("visits", purpose="test")
    dates = frame["visit_date"].astype("datetime64[ns]")
    expected = int((dates < pd.Timestamp("2025-06-02")).sum())
    assert 0 < expected < len(frame)

    report = run_retention(catalog, now=NOW)

    (action,) = report.actions
    assert (action.due, action.applied, action.rows_removed) == (True, True, expected)
    assert (action.from_version, action.to_version) == (1, 2)
    assert report.changed == ["visits"]
    after = catalog.load_frame("visits", purpose="test")
    assert len(after) == len(frame) - expected
    assert (after["visit_date"].astype("datetime64[ns]") >= pd.Timestamp("2025-06-02")).all()
    assert [(v.version, v.state) for v in catalog.versions("visits")] == [
        (1, "shredded"),
        (2, "current"),
    ]
    with catalog.store.session() as session:
        (record,) = session.scalars(select(ErasureRow)).all()
        assert (record.kind, record.person, record.rows_removed) == ("retention", None, expected)
        policy = session.get(RetentionPolicyRow, record.dataset_id)
        assert policy is not None and policy.last_result["to_version"] == 2
    # Idempotent: the same moment again finds nothing due and writes nothing.
    written = _counts(catalog)
    again = run_retention(catalog, now=NOW)
    assert [(a.due, a.applied) for a in again.actions] == [(False, False)]
    assert again.changed == [] and _counts(catalog) == written
    runs = catalog.access.trail.entries(action="retention.run")
    assert [e.details["changed"] for e in runs] == [["visits"], []]
    assert len(catalog.access.trail.entries(action="retention.apply")) == 1


def test_a_dry_run_reports_and_writes_nothing(catalog_of):
    catalog = catalog_of()
    set_policy(catalog, "visits", older_than_days=365, date_column="visit_date")
    written = _counts(catalog)
    report = run_retention(catalog, now=NOW, dry_run=True)
    (action,) = report.actions
    assert action.due and not action.applied and action.rows_removed > 0
    assert "would remove" in action.note
    assert _counts(catalog) == written
    assert [v.state for v in catalog.versions("visits")] == ["current"]


def test_an_expired_dataset_loses_every_version_and_keeps_its_history(catalog_of):
    catalog = catalog_of()
    set_policy(catalog, "visits", expire_on="2026-01-01")
    early = run_retention(catalog, now=datetime(2025, 12, 31, tzinfo=UTC))
    assert [a.due for a in early.actions] == [False]
    report = run_retention(catalog, now=NOW)
    (action,) = report.actions
    assert action.applied and action.destroyed_versions == (1,)
    assert all(v.state == "shredded" for v in catalog.versions("visits"))
    assert catalog.current_version("visits") is None
    assert catalog.get("visits").name == "visits"  # the registration and ledger stay
    assert [a.applied for a in run_retention(catalog, now=NOW).actions] == [False]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"older_than_days": 30, "date_column": "nope"}, NotFoundError, "no column 'nope'"),
        ({"older_than_days": 30, "date_column": "age"}, InvalidInputError, "numbers, not dates"),
        ({"older_than_days": 30, "date_column": "pid"}, InvalidInputError, "not dates"),
        ({"older_than_days": 30}, InvalidInputError, "date column"),
        ({}, InvalidInputError, "maximum age or an expiry date"),
        ({"older_than_days": 0, "date_column": "visit_date"}, InvalidInputError, ">= 1"),
        ({"older_than_days": 10**11, "date_column": "visit_date"}, InvalidInputError, "1000 years"),
        ({"expire_on": "someday"}, InvalidInputError, "not a date"),
    ],
)
def test_a_bad_policy_is_refused_and_nothing_is_written(catalog_of, kwargs, error, words):
    catalog = catalog_of()
    with pytest.raises(error, match=words):
        set_policy(catalog, "visits", **kwargs)
    assert policies(catalog) == []


def test_an_age_stored_beyond_the_limit_removes_nothing_and_does_not_stop_the_run(catalog_of):
    # `veil retention set --older-than 99999999y` once crashed every later run (OverflowError).
    catalog = catalog_of()
    set_policy(catalog, "visits", older_than_days=30, date_column="visit_date")
    with catalog.store.session() as session:  # a policy written before the limit existed
        session.get(RetentionPolicyRow, catalog.get("visits").dataset_id).days = 10**11
    before = _counts(catalog)
    (action,) = run_retention(catalog, now=NOW).actions
    assert (action.due, action.applied, action.rows_removed) == (False, False, 0)
    assert _counts(catalog) == before


def test_a_policy_on_a_reference_dataset_is_refused(catalog_of):
    with pytest.raises(ConflictError, match="reference dataset"):
        set_policy(catalog_of(), "ref", expire_on="2030-01-01")


def test_a_date_column_with_a_value_that_is_not_a_date_is_refused(tmp_path, cli, catalog_of):
    rows = [{"pid": "a", "seen": "2024-01-01"}, {"pid": "b", "seen": "last tuesday"}]
    source = write_csv(tmp_path / "bad.csv", rows)
    catalog_of().add(source, name="bad", managed=True, privacy_unit="pid")
    code, out, err = cli(
        "retention", "set", "bad", "--older-than", "30d", "--date-column", "seen", "--json"
    )
    assert code == 3, err
    assert "not dates" in err and "last tuesday" in err
    assert json.loads(out)["error"]["code"] == "invalid_input"
    assert json.loads(cli("retention", "show", "--json")[1]) == []


def test_cli_set_show_run(cli, managed):
    code, out, err = cli(
        "retention", "set", "visits", "--older-than", "1y", "--date-column", "visit_date"
    )
    assert code == 0, err
    assert "rows older than 365 days by visit_date" in out
    shown = json.loads(cli("retention", "show", "--json")[1])
    assert [(p["dataset"], p["days"]) for p in shown] == [("visits", 365)]
    code, out, err = cli("retention", "run", "--dry-run", "--json")
    assert code == 0, err
    dry = json.loads(out)
    assert dry["dry_run"] and dry["changed"] == []
    code, out, err = cli("retention", "run")
    assert code == 0, err
    assert "visits" in out
    code, out, _ = cli("retention", "run", "--json")
    assert json.loads(out)["changed"] == []


@pytest.mark.parametrize("text", ["0d", "x", "-3d", "12 parsecs"])
def test_an_age_that_is_not_days_is_refused(cli, managed, text):
    code, _, err = cli(
        "retention", "set", "visits", "--older-than", text, "--date-column", "visit_date"
    )
    assert code == 3 and "365d" in err


def test_policies_are_shown_to_auditors_not_to_analysts(catalog_of):
    from veil.access import Access, Principal
    from veil.data import Catalog

    owner = catalog_of()
    set_policy(owner, "visits", expire_on="2030-01-01")
    owner.access.grant("ann", "analyst", "visits")
    owner.access.grant("aud", "auditor", "visits")
    for who, seen in (("ann", []), ("aud", ["visits"])):
        acting = Catalog(owner.store, owner.settings, access=Access(owner.store, Principal(who)))
        assert [p.dataset for p in policies(acting)] == seen
