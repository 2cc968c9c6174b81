"""Consent per person and purpose: records, imports, and the filter every release goes through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from veil.access import Access, Outcome, Principal
from veil.data import Catalog, Consent, DataUse, person_key, person_token
from veil.dp import query_dataset
from veil.errors import InvalidInputError, PermissionDeniedError
from veil.federated._charging import bind_to_ledger
from veil.federated._config import FederatedConfig
from veil.ledger import Budget, Ledger
from veil.store.tables import ConsentRecordRow

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

DATASET = "clinic"
N_PERSONS = 12
# Person 0 has two rows (two visits); everyone else one.
ROWS = [(0, 40), *[(pid, 20 + pid) for pid in range(N_PERSONS)]]
COUNT = "SELECT COUNT(*) FROM t"
STATS = "statistics: monthly headcount"


@pytest.fixture
def owner(store, workspace, tmp_path: Path) -> Catalog:
    """Alice owns a workspace with one dataset of 12 patients (13 rows), keyed by ``pid``."""
    del workspace  # its keys/persons.key makes the tokens
    path = tmp_path / "clinic.csv"
    lines = ["pid,age", *(f"P{pid:03d},{age}" for pid, age in ROWS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    catalog = Catalog(store, access=Access(store, Principal("alice")))
    catalog.add(path, name=DATASET, privacy_unit="pid", bounds={"age": (0, 120)}, max_rows=2)
    return catalog


@pytest.fixture
def consent(owner: Catalog) -> Consent:
    return Consent(owner)


def _ledger(catalog: Catalog) -> Ledger:
    ledger = Ledger(catalog.store, access=catalog.access)
    if ledger.status(DATASET).budget is None:
        ledger.set_budget(DATASET, Budget(epsilon=1000.0))
    return ledger


def _dp_count(catalog: Catalog, purpose: str = STATS) -> int:
    """A DP count through the real query path; epsilon 100: the noise is below 0.5 w.p. > 1 - 1e-20."""
    result = query_dataset(
        catalog, _ledger(catalog), DATASET, COUNT, epsilon=100.0, purpose=purpose
    )
    [row] = result.rows
    value = next(iter(row.values()))
    return round(value["value"] if isinstance(value, dict) else value)


def test_opt_in_default_hides_persons_without_consent(owner: Catalog, consent: Consent):
    consent.enable(DATASET)  # default: withdrawn (opt-in)
    frame = owner.load_frame(DATASET, purpose=STATS)
    assert len(frame) == 0
    assert frame.attrs["veil.consent"] == {
        "purpose": "statistics",
        "through_record": 0,
        "as_of": frame.attrs["veil.consent"]["as_of"],
        "persons_excluded": N_PERSONS,
        "rows_excluded": len(ROWS),
        "default": "withdrawn",
    }
    for pid in (0, 5):
        consent.record(DATASET, f"P{pid:03d}", "statistics", "granted", source="form A")
    consent.record(DATASET, "P007", "research", "granted", source="form A")  # another purpose
    frame = owner.load_frame(DATASET, purpose=STATS)
    assert sorted(frame["pid"]) == ["P000", "P000", "P005"]  # all of P000's rows: per person
    assert frame.attrs["veil.consent"]["persons_excluded"] == N_PERSONS - 2
    assert frame.attrs["veil.consent"]["rows_excluded"] == len(ROWS) - 3
    assert frame.attrs["veil.consent"]["through_record"] == 3


def test_opt_out_default_keeps_persons_without_a_record(owner: Catalog, consent: Consent):
    consent.enable(DATASET, default="granted")
    consent.record(DATASET, "P003", "statistics", "withdrawn")
    frame = owner.load_frame(DATASET, ["age"], purpose="statistics")
    assert list(frame.columns) == ["age"]  # the unit was read for the filter, then dropped
    assert len(frame) == len(ROWS) - 1
    assert frame.attrs["veil.consent"]["persons_excluded"] == 1


def test_a_withdrawal_after_a_grant_hides_the_person_from_the_next_query(
    owner: Catalog, consent: Consent
):
    consent.enable(DATASET)
    start = datetime.now(UTC) - timedelta(days=30)
    for pid in range(N_PERSONS):
        consent.record(DATASET, f"P{pid:03d}", "statistics", "granted", at=start)
    assert _dp_count(owner) == len(ROWS)
    consent.record(DATASET, "P000", "statistics", "withdrawn", source="email")
    assert _dp_count(owner) == len(ROWS) - 2
    entries = _ledger(owner).entries(DATASET)
    assert [e.details["consent"]["rows_excluded"] for e in entries] == [0, 2]
    assert [e.details["consent"]["persons_excluded"] for e in entries] == [0, 1]
    assert entries[1].details["consent"]["through_record"] == N_PERSONS + 1
    # The trail's read entry names the same state, and the trail still verifies.
    reads = owner.access.trail.entries(action="dataset.read")
    assert reads[-1].details["consent"]["through_record"] == N_PERSONS + 1
    assert reads[-1].details["consent"]["purpose"] == "statistics"
    assert owner.access.trail.verify().ok


def test_the_latest_decision_counts_not_the_latest_import(owner: Catalog, consent: Consent):
    consent.enable(DATASET)
    now = datetime.now(UTC)
    consent.record(DATASET, "P001", "statistics", "withdrawn", at=now - timedelta(days=1))
    # An old paper form imported afterwards does not undo the later withdrawal.
    consent.record(DATASET, "P001", "statistics", "granted", at=now - timedelta(days=300))
    assert len(owner.load_frame(DATASET, purpose=STATS)) == 0
    assert consent.state(DATASET, "P001")["statistics"].status == "withdrawn"


def test_records_dated_in_the_future_are_not_applied_yet(owner: Catalog, consent: Consent):
    consent.enable(DATASET)
    consent.record(DATASET, "P002", "statistics", "granted", at=datetime.now(UTC) - timedelta(1))
    consent.record(DATASET, "P002", "statistics", "withdrawn", at=datetime.now(UTC) + timedelta(1))
    consent.record(DATASET, "P004", "statistics", "granted", at="2999-01-01T00:00:00Z")
    frame = owner.load_frame(DATASET, purpose=STATS)
    assert list(frame["pid"]) == ["P002"]
    state = consent.state(DATASET, 2)  # "P002" and 2 differ; this one has no record
    assert state["statistics"].source == "default"
    assert consent.state(DATASET, "P002")["statistics"].status == "granted"


def test_an_undeclared_purpose_is_refused_and_nothing_changes(owner: Catalog, consent: Consent):
    consent.enable(DATASET)
    with pytest.raises(InvalidInputError, match="undeclared consent purpose"):
        consent.record(DATASET, "P001", "marketing", "granted")
    with pytest.raises(InvalidInputError, match="unknown consent status"):
        consent.record(DATASET, "P001", "statistics", "maybe")
    with owner.store.session() as session:
        assert session.scalars(select(ConsentRecordRow)).all() == []
    # A release whose purpose names no term is refused before a row is read or a budget spent.
    ledger = _ledger(owner)
    for purpose in ("monthly headcount", "", "statisticsX: report"):
        with pytest.raises(InvalidInputError, match="under consent management") as caught:
            query_dataset(owner, ledger, DATASET, COUNT, epsilon=1.0, purpose=purpose)
        assert "statistics: " in (caught.value.fix or "")
    assert ledger.entries(DATASET) == []
    refused = owner.access.trail.entries(action="dataset.read")
    assert [e.outcome for e in refused] == [Outcome.REFUSED] * 3
    assert all(e.details["reason"] == "consent_purpose" for e in refused)


def test_a_dataset_not_under_consent_management_is_read_whole(owner: Catalog, consent: Consent):
    consent.record(DATASET, "P001", "statistics", "withdrawn")  # recorded, not yet enforced
    frame = owner.load_frame(DATASET, purpose="anything")
    assert len(frame) == len(ROWS) and "veil.consent" not in frame.attrs


def test_an_owner_declares_purposes(owner: Catalog, consent: Consent):
    names = [p.name for p in consent.purposes()]
    assert names == [
        "federated-learning",
        "model-training",
        "research",
        "statistics",
        "synthetic-data",
    ]
    consent.add_purpose("clinical-audit", "audits of clinical practice")
    assert "clinical-audit" in [p.name for p in consent.purposes()]
    for bad in ("Clinical", "x", "a b", "1abc"):
        with pytest.raises(InvalidInputError, match="invalid purpose name"):
            consent.add_purpose(bad, "why")
    [entry] = owner.access.trail.entries(action="consent.purpose")
    assert entry.details["purpose"] == "clinical-audit"


def test_csv_with_one_bad_line_writes_nothing(owner: Catalog, consent: Consent, tmp_path: Path):
    consent.enable(DATASET)
    good = tmp_path / "consents.csv"
    good.write_text(
        "person,purpose,status,at\n"
        "P001,statistics,granted,2026-01-01\n"
        "P002,statistics,granted,2026-01-02T10:00:00+01:00\n"
        "P002,research,withdrawn,\n",
        encoding="utf-8",
    )
    for line, problem in (
        ("P003,marketing,granted,2026-01-01", "undeclared consent purpose"),
        ("P003,statistics,yes,2026-01-01", "unknown consent status"),
        ("P003,statistics,granted,yesterday", "not a time"),
        (",statistics,granted,2026-01-01", "identifier is"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(good.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")
        with pytest.raises(InvalidInputError, match=f"bad.csv line 5: .*{problem}"):
            consent.import_csv(DATASET, bad)
    with owner.store.session() as session:
        assert session.scalars(select(ConsentRecordRow)).all() == []
    assert owner.access.trail.entries(action="consent.import") == []
    report = consent.import_csv(DATASET, good, source="hospital form v2")
    assert (report.records, report.persons) == (3, 2)
    assert report.counts == {"research": {"withdrawn": 1}, "statistics": {"granted": 2}}
    [entry] = owner.access.trail.entries(action="consent.import")
    assert (entry.details["records"], entry.details["file"]) == (3, "consents.csv")
    assert entry.details["source"] == "hospital form v2"
    assert entry.details["counts"] == report.counts
    frame = owner.load_frame(DATASET, purpose=STATS)
    assert sorted(frame["pid"]) == ["P001", "P002"]
    summary = consent.summary(DATASET)
    assert summary["purposes"]["statistics"] == {"granted": 2, "withdrawn": 0}
    assert summary["purposes"]["research"] == {"granted": 0, "withdrawn": 1}


def test_the_consent_table_holds_no_raw_identifier(owner: Catalog, consent: Consent, workspace):
    consent.enable(DATASET)
    consent.record(DATASET, "P009", "statistics", "granted", source="form")
    with owner.store.session() as session:
        [row] = session.scalars(select(ConsentRecordRow)).all()
        stored = [str(getattr(row, c.key)) for c in ConsentRecordRow.__table__.columns]
    key = person_key(workspace)
    assert row.person == person_token(key, owner.get(DATASET).dataset_id, "P009")
    assert len(row.person) == 32 and int(row.person, 16) >= 0
    assert not [value for value in stored if "P009" in value]
    [entry] = owner.access.trail.entries(action="consent.record")
    assert "P009" not in str(entry.details) and entry.details["person"] == row.person


def test_an_analyst_cannot_record_consent(owner: Catalog):
    owner.access.grant("bob", "analyst", DATASET, reason="test")
    bob = Catalog(owner.store, access=Access(owner.store, Principal("bob")))
    with pytest.raises(PermissionDeniedError, match=r"consent\.manage"):
        Consent(bob).record(DATASET, "P001", "statistics", "granted")
    with pytest.raises(PermissionDeniedError, match=r"consent\.manage"):
        Consent(bob).enable(DATASET)
    with pytest.raises(PermissionDeniedError, match=r"consent\.read"):
        Consent(bob).state(DATASET, "P001")
    refused = [e for e in owner.access.trail.entries(actor="bob") if e.outcome is Outcome.REFUSED]
    assert [e.action for e in refused] == ["consent.record", "consent.enable", "consent.read"]
    with owner.store.session() as session:
        assert session.scalars(select(ConsentRecordRow)).all() == []


def test_enabling_needs_a_privacy_unit(store, workspace):
    del workspace
    catalog = Catalog(store, access=Access(store, Principal("alice")))
    catalog.add("sklearn:diabetes", name="diab", bounds={"bmi": (-0.1, 0.2)})
    with pytest.raises(InvalidInputError, match="privacy-unit") as refused:
        Consent(catalog).enable("diab")
    # The fix names an option `veil datasets update` has (it once said --privacy-unit).
    assert "veil datasets update diab --id COLUMN" in refused.value.fix


def test_a_raw_load_goes_through_the_same_filter(owner: Catalog, consent: Consent):
    consent.enable(DATASET)
    consent.record(DATASET, "P006", "research", "granted")
    raw = owner.load_frame(DATASET, use=DataUse.RAW, purpose="research: cohort 12")
    assert list(raw["pid"]) == ["P006"]
    assert raw.attrs["veil.consent"]["purpose"] == "research"


def test_a_federated_run_on_a_consent_managed_dataset_is_refused(owner: Catalog, consent):
    config = FederatedConfig(dataset="digits", ledger_dataset=DATASET)
    ledger = _ledger(owner)
    assert bind_to_ledger(config, ledger).data_sha256 == owner.get(DATASET).content_sha256
    consent.enable(DATASET)
    with pytest.raises(InvalidInputError, match="clients read their own copies"):
        bind_to_ledger(config, ledger)


def test_a_file_that_is_not_utf8_csv_is_refused(owner: Catalog, consent: Consent, tmp_path: Path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("person,purpose,status\nJos\xe9,statistics,granted\n".encode("latin-1"))
    with pytest.raises(InvalidInputError, match="not a readable CSV file"):
        consent.import_csv(DATASET, path)
    path.write_text("who,purpose,status\nP001,statistics,granted\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="unexpected columns"):
        consent.import_csv(DATASET, path)


def test_a_line_over_the_csv_field_limit_is_refused_saying_why(
    owner: Catalog, consent: Consent, tmp_path: Path
):
    # The refusal once said only "Got Error." (the name of csv's exception class).
    path = tmp_path / "huge.csv"
    path.write_text("person,purpose,status\n" + "x" * 200_000 + ",research,granted\n")
    with pytest.raises(InvalidInputError, match="not a readable CSV file") as refused:
        consent.import_csv(DATASET, path)
    assert "field larger than field limit" in refused.value.got
    assert consent.summary(DATASET)["through_record"] == 0  # nothing written


def test_reading_one_persons_state_is_on_the_trail(owner: Catalog, consent: Consent):
    consent.record(DATASET, "P001", "research", "granted", source="form")
    state = consent.state(DATASET, "P001")
    assert state["research"].status == "granted" and state["research"].source == "form"
    assert state["statistics"] == ("granted", None, "not managed")
    [read] = owner.access.trail.entries(action="consent.read")
    assert (
        read.details["person"]
        == owner.access.trail.entries(action="consent.record")[0].details["person"]
    )


def test_the_ledger_shows_consent_counts_only_to_those_who_may_read_consent(
    owner: Catalog, consent: Consent
):
    """An analyst reads the ledger, not consent: how many rows one withdrawn person held is hidden."""
    consent.enable(DATASET, default="granted")
    consent.record(DATASET, "P000", "statistics", "withdrawn")  # P000 has two rows
    _dp_count(owner)
    owner.access.grant("bob", "analyst", DATASET)
    analyst = Ledger(owner.store, access=Access(owner.store, Principal("bob")))
    (seen,) = analyst.entries(DATASET)
    assert seen.details["consent"]["rows_excluded"] is None
    assert seen.details["consent"]["persons_excluded"] is None
    assert seen.details["consent"]["through_record"] == 1  # which consent state: still there
    released = [h for h in analyst.history(DATASET) if h.get("details", {}).get("consent")]
    assert released and released[0]["details"]["consent"]["rows_excluded"] is None
    # The owner (consent.read) sees them.
    (full,) = _ledger(owner).entries(DATASET)
    assert full.details["consent"]["rows_excluded"] == 2
