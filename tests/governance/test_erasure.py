"""Erasure of one person from a managed dataset: the new version, the record, the shredded key."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.governance._data import visits_rows, write_csv

from veil.data import person_key, person_token
from veil.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from veil.governance import erase, run_retention, set_policy
from veil.store.tables import ErasureRow, TrailEntryRow
from veil.workspace import Workspace

PERSON = "P-0003"


def _trail_bodies(catalog) -> list[str]:
    with catalog.store.session() as session:
        return list(session.scalars(select(TrailEntryRow.body).order_by(TrailEntryRow.seq)))


def test_erase_writes_a_version_without_the_person_and_shreds_the_old_one(catalog_of):
    catalog = catalog_of()
    before = catalog.load_frame("visits", purpose="test")
    assert (before["pid"] == PERSON).sum() == 2
    old = catalog.current_version("visits")
    sealed = Path(Workspace.locate().home) / old.path
    backup = sealed.read_bytes()  # a copy made before the erasure (a backup, say)
    from veil.vault import MasterKey, Vault

    assert Vault.open(MasterKey.from_env()).unseal(backup, name=old.path)  # readable before

    report = erase(catalog, "visits", PERSON, reason="GDPR art. 17 request #12")

    token = person_token(person_key(Workspace.locate()), old.dataset_id, PERSON)
    assert (report.person, report.rows_removed, report.rows_left) == (token, 2, 58)
    assert (report.from_version, report.to_version) == (old.version, old.version + 1)
    assert "never refunded" in report.budget_note
    after = catalog.load_frame("visits", purpose="test")
    assert PERSON not in set(after["pid"])
    assert len(after) == 58
    assert catalog.current_version("visits").version == old.version + 1
    states = {v.version: v.state for v in catalog.versions("visits")}
    assert states == {old.version: "shredded", old.version + 1: "current"}
    assert not sealed.exists()
    with catalog.store.session() as session:
        records = session.scalars(select(ErasureRow)).all()
        assert [(r.kind, r.person, r.rows_removed) for r in records] == [("erase", token, 2)]
        assert records[0].reason == "GDPR art. 17 request #12"
    bodies = _trail_bodies(catalog)
    assert any('"dataset.erase"' in b and token in b for b in bodies)
    assert not any(PERSON in b for b in bodies), "the raw identifier reached the trail"
    # The old ciphertext (any copy of it) can never be decrypted again: its key is gone.
    assert Vault.object_id(backup) == old.object_id
    with pytest.raises(NotFoundError, match=f"data key {old.object_id} was destroyed"):
        Vault.open(MasterKey.from_env()).unseal(backup, name=old.path)


def test_an_unknown_person_is_not_found_and_nothing_changes(catalog_of):
    catalog = catalog_of()
    before = catalog.current_version("visits")
    with pytest.raises(NotFoundError, match="not in 'visits'"):
        erase(catalog, "visits", "P-9999", reason="request")
    assert catalog.current_version("visits").version == before.version
    assert [v.state for v in catalog.versions("visits")] == ["current"]
    with catalog.store.session() as session:
        assert session.scalars(select(ErasureRow)).all() == []


def test_a_reference_dataset_is_refused_with_how_to_convert_it(catalog_of):
    catalog = catalog_of()
    with pytest.raises(ConflictError) as caught:
        erase(catalog, "ref", "P-0001", reason="request")
    assert "reference dataset" in str(caught.value)
    assert "--managed" in caught.value.fix


def test_the_fix_for_a_reference_dataset_works_as_written(tmp_path, cli, catalog_of):
    # It once said `veil datasets add FILE --managed --name ref2`, which the catalogue refuses
    # (the same bytes under a second name would be a second budget).
    code, _, err = cli("erase", "ref", "--person", "P-0001", "--reason", "request")
    assert code == 7 and "veil datasets remove ref" in " ".join(err.split())
    assert cli("budget", "set", "ref", "--epsilon", "1")[0] == 0
    assert cli("datasets", "remove", "ref")[0] == 0
    source = str(tmp_path / "ref.csv")
    code, _, err = cli("datasets", "add", source, "--name", "ref", "--managed", "--id", "pid")
    assert code == 0, err
    code, _, err = cli("erase", "ref", "--person", "P-0001", "--reason", "request")
    assert code == 0, err
    assert catalog_of().get("ref").managed
    code, out, _ = cli("budget", "show", "ref", "--json")
    assert code == 0 and '"epsilon": 1.0' in out  # the history rejoined: same budget


def test_an_empty_reason_is_refused(catalog_of):
    with pytest.raises(InvalidInputError, match="reason"):
        erase(catalog_of(), "visits", PERSON, reason="  ")


def test_the_same_person_erased_twice_is_not_found_the_second_time(catalog_of):
    catalog = catalog_of()
    erase(catalog, "visits", PERSON, reason="request")
    with pytest.raises(NotFoundError):
        erase(catalog, "visits", PERSON, reason="request")
    assert len(catalog.versions("visits")) == 2


def test_cli_erase_json_and_errors(cli, managed):
    code, out, err = cli("erase", "visits", "--person", PERSON, "--reason", "request", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["rows_removed"] == 2 and len(payload["person"]) == 32
    assert PERSON not in out
    code, out, err = cli("erase", "visits", "--person", PERSON, "--reason", "again", "--json")
    assert code == 6 and json.loads(out)["error"]["code"] == "not_found"
    code, _, err = cli("erase", "ref", "--person", "P-0001", "--reason", "request")
    assert code == 7 and "reference dataset" in err
    code, out, err = cli("erase", "visits", "--person", "P-0004", "--reason", "request")
    assert code == 0, err
    assert "version 2 -> 3" in out and "never refunded" in out


def test_a_lesser_role_cannot_erase(cli, managed, monkeypatch):
    from veil.access import Access

    access = Access.open()
    try:
        _, token = access.create_key("analyst-key", "analyst", "visits", reason="test")
    finally:
        access.store.dispose()
    monkeypatch.setenv("VEIL_KEY", token)
    code, out, err = cli("erase", "visits", "--person", PERSON, "--reason", "request", "--json")
    assert code == 9 and json.loads(out)["error"]["code"] == "permission_denied"
    assert "dataset.erase" in err
    code, _, _ = cli("retention", "set", "visits", "--expire-on", "2020-01-01")
    assert code == 9
    monkeypatch.delenv("VEIL_KEY")
    access = Access.open()
    try:
        refused = [
            e for e in access.trail.entries() if e.action in {"dataset.erase", "retention.set"}
        ]
    finally:
        access.store.dispose()
    assert [str(e.outcome) for e in refused] == ["refused", "refused"]


def test_permission_is_checked_before_anything_is_read(catalog_of):
    from veil.access import Access, Principal
    from veil.data import Catalog

    owner = catalog_of()
    owner.access.grant("carol", "analyst", "visits")
    access = Access(owner.store, Principal("carol"))
    as_carol = Catalog(owner.store, owner.settings, access=access)
    with pytest.raises(PermissionDeniedError):
        erase(as_carol, "visits", PERSON, reason="request")
    assert len(owner.versions("visits")) == 1


def test_erasure_keeps_every_other_person_of_a_consent_managed_dataset(cli, catalog_of):
    """The rewrite reads every row: a consent filter must not drop the people who did not consent."""
    assert cli("consent", "enable", "visits")[0] == 0  # opt-in: nobody has consented yet
    catalog = catalog_of()
    report = erase(catalog, "visits", PERSON, reason="request")
    assert (report.rows_removed, report.rows_left) == (2, 58)
    set_policy(catalog, "visits", older_than_days=365, date_column="visit_date")
    (action,) = run_retention(catalog, now=datetime(2026, 6, 2, tzinfo=UTC)).actions
    assert action.rows_kept + action.rows_removed == 58
    assert action.rows_kept > 0


def test_an_anonymised_output_is_listed_by_the_erasure(tmp_path, cli, managed):
    released = tmp_path / "released.csv"
    code, _, err = cli("anonymize", "visits", "--qi", "age", "--k", "2", "-o", str(released))
    assert code == 0, err
    code, out, err = cli("erase", "visits", "--person", "P-0003", "--reason", "request", "--json")
    assert code == 0, err
    affected = json.loads(out)["affected"]
    assert [(a["kind"], a["name"], a["version"]) for a in affected] == [
        ("anonymized", str(released.absolute()), 1)
    ]
    assert "write it again" in affected[0]["action"]


def test_a_dataset_without_a_privacy_unit_names_no_person(tmp_path, catalog_of):
    catalog = catalog_of()
    source = write_csv(tmp_path / "rows.csv", visits_rows(3))
    catalog.add(source, name="rows", managed=True)
    with pytest.raises(InvalidInputError, match="no privacy-unit column"):
        erase(catalog, "rows", "P-0001", reason="request")
    assert [v.state for v in catalog.versions("rows")] == ["current"]


def test_the_old_version_is_shredded_even_when_the_model_step_fails(catalog_of, monkeypatch):
    import veil.governance._erasure as module

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the model step")

    monkeypatch.setattr(module, "derived_artifacts", broken)
    catalog = catalog_of()
    with pytest.raises(RuntimeError, match="model step"):
        erase(catalog, "visits", PERSON, reason="request")
    assert [(v.version, v.state) for v in catalog.versions("visits")] == [
        (1, "shredded"),
        (2, "current"),
    ]


def test_a_dataset_with_erasure_or_consent_records_is_archived_when_removed(catalog_of):
    # `veil datasets remove` of a dataset with no budget but an erasure record once failed
    # with an IntegrityError (the erasure record points at the dataset's row).
    from veil.data import Consent

    catalog = catalog_of()
    erase(catalog, "visits", PERSON, reason="request")
    Consent(catalog).enable("ref")  # a reference dataset under consent management, no budget
    for name in ("visits", "ref"):
        removed = catalog.remove(name)
        assert removed["archived"] and removed["archived_as"], removed
    with catalog.store.session() as session:  # the erasure record is kept, as documented
        assert len(session.scalars(select(ErasureRow)).all()) == 1
    assert list((catalog.workspace.home / "datasets").rglob("*.veil")) == []


def test_registering_the_same_file_again_does_not_bring_erased_people_back(
    tmp_path, cli, catalog_of
):
    """A backup of the original file, registered again, rejoins the history without them."""
    code, _, err = cli("erase", "visits", "--person", "P-0003", "--reason", "request")
    assert code == 0, err
    assert cli("datasets", "remove", "visits")[0] == 0
    source = str(tmp_path / "visits.csv")  # the original file, P-0003's rows included
    # By reference Veil could not leave them out: refused, nothing registered.
    code, _, err = cli("datasets", "add", source, "--name", "visits", "--id", "pid")
    assert code != 0 and "erased" in err
    code, _, err = cli(
        "datasets", "add", source, "--name", "visits", "--managed", "--id", "pid",
        "--bounds", "age=0:120", "--categories", "outcome=no|yes", "--json",
    )  # fmt: skip
    assert code == 0, err
    catalog = catalog_of()
    info = catalog.get("visits")
    assert info.report["erased_left_out"] == {"persons": 1, "rows": 2}
    frame = catalog.load_frame("visits")
    assert "P-0003" not in set(frame["pid"]) and len(frame) == info.n_rows == 58
