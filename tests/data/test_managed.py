"""Managed datasets: sealed versions in the workspace, checked on load, replaced and shredded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select, update

from veil.access import Access, Outcome, Principal
from veil.data import Catalog, DatasetVersion, VersionChange
from veil.data.readers import open_reader
from veil.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from veil.store.tables import DatasetVersionRow
from veil.vault import MasterKey, Vault

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

SECRET_NAME = "Quentinella-Vasquez-Oyelaran"  # noqa: S105 - a value that must never appear on disk in clear
SECRET_NUMBER = "918273645.125"  # noqa: S105 - a test value


@pytest.fixture
def patients(tmp_path: Path) -> Path:
    path = tmp_path / "patients.csv"
    rows = ["patient_id,name,age,score,group"]
    for i in range(60):
        name = SECRET_NAME if i == 7 else f"person-{i}"
        score = SECRET_NUMBER if i == 7 else f"{i * 1.5:.3f}"
        rows.append(f"p{i // 2},{name},{20 + i % 50},{score},{'ab'[i % 2]}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _register(catalog: Catalog, source: Path | str, name: str = "patients", **kwargs):
    extra = {"privacy_unit": "patient_id", "max_rows": 2} if isinstance(source, Path) else {}
    return catalog.add(source, name=name, managed=True, **(extra | kwargs))


def _file(catalog: Catalog, version: DatasetVersion) -> Path:
    assert catalog.workspace is not None
    return catalog.workspace.home / version.path


# ---------------------------------------------------------------- registration and loading


def test_a_csv_round_trip_equals_the_source_dtypes_included(managed_owner: Catalog, patients: Path):
    info = _register(managed_owner, patients)
    assert info.managed is True and info.version == 1
    shown = managed_owner.get("patients").to_dict()
    assert shown["managed"] is True and shown["version"] == 1
    frame = managed_owner.load_frame("patients")
    expected = open_reader(str(patients), "csv").read()
    pd.testing.assert_frame_equal(frame, expected)
    assert frame.attrs["veil.version"] == 1
    [version] = managed_owner.versions("patients")
    assert version.state == "current" and version.reason == "registration"
    assert version.n_rows == 60 and version.created_by == "alice"
    assert _file(managed_owner, version).name == "v1.parquet.veil"
    only = managed_owner.load_frame("patients", ["age", "group"])
    pd.testing.assert_frame_equal(only, expected[["age", "group"]])
    # The source is no longer needed: the managed copy is what loads.
    patients.unlink()
    pd.testing.assert_frame_equal(managed_owner.load_frame("patients"), expected)


def test_a_sklearn_round_trip_equals_the_source(managed_owner: Catalog):
    info = _register(managed_owner, "sklearn:diabetes", name="diab")
    assert info.n_rows == 442
    frame = managed_owner.load_frame("diab")
    pd.testing.assert_frame_equal(frame, open_reader("sklearn:diabetes", "sklearn").read())
    [entry] = managed_owner.access.trail.entries(action="dataset.register")
    assert entry.details["managed"] is True


def test_the_ciphertext_holds_no_plaintext_and_no_plaintext_file_is_written(
    managed_owner: Catalog, patients: Path
):
    _register(managed_owner, patients)
    [version] = managed_owner.versions("patients")
    blob = _file(managed_owner, version).read_bytes()
    for needle in (SECRET_NAME.encode(), SECRET_NUMBER.encode(), b"PAR1", b"person-1"):
        assert needle not in blob
    assert managed_owner.workspace is not None
    for path in managed_owner.workspace.home.rglob("*"):
        if path.is_file():
            assert SECRET_NAME.encode() not in path.read_bytes(), path
    # The row's digest is the plaintext Parquet's, which only the vault can recover.
    vault = Vault.open(MasterKey.from_env(), managed_owner.workspace)
    plain = vault.unseal(blob, name=version.path)
    assert hashlib.sha256(plain).hexdigest() == version.sha256
    assert Vault.object_id(blob) == version.object_id


def test_the_version_folders_are_private_to_the_owner(managed_owner: Catalog, patients: Path):
    # datasets/ was once made by mkdir(parents=True), which leaves parents 0o755 (the ids listable).
    _register(managed_owner, patients)
    [version] = managed_owner.versions("patients")
    folder = _file(managed_owner, version).parent
    for path in (folder, folder.parent):
        assert path.stat().st_mode & 0o777 == 0o700, path


def test_a_flipped_byte_in_the_file_is_refused(managed_owner: Catalog, patients: Path):
    _register(managed_owner, patients)
    [version] = managed_owner.versions("patients")
    path = _file(managed_owner, version)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match="tampered"):
        managed_owner.load_frame("patients")


def test_a_wrong_digest_in_the_row_is_refused_naming_the_version(
    managed_owner: Catalog, patients: Path
):
    _register(managed_owner, patients)
    with managed_owner.store.session() as session:
        session.execute(update(DatasetVersionRow).values(sha256="0" * 64))
    with pytest.raises(InvalidInputError, match="version 1 of 'patients'") as caught:
        managed_owner.load_frame("patients")
    assert caught.value.details["version"] == 1


def test_without_a_master_key_a_managed_registration_is_refused_and_writes_nothing(
    store, managed_home, patients: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("VEIL_VAULT_KEY", raising=False)
    catalog = Catalog(store, access=Access(store, Principal("alice")), workspace=managed_home)
    with pytest.raises(NotFoundError, match="master key") as caught:
        _register(catalog, patients)
    assert "VEIL_VAULT_KEY" in caught.value.expected
    assert "VEIL_VAULT_PASSPHRASE" in caught.value.expected
    assert catalog.list() == []
    assert not (managed_home.home / "datasets").exists()


def test_mnist_cannot_be_managed(managed_owner: Catalog, shared_data: Path):
    with pytest.raises(InvalidInputError, match="only tables can be managed"):
        managed_owner.add(shared_data / "mnist", name="digits", split="test", managed=True)
    assert managed_owner.list() == []


def test_a_failed_registration_leaves_no_file_and_no_key(managed_owner: Catalog, patients: Path):
    _register(managed_owner, patients)
    with pytest.raises(ConflictError):  # the same bytes under a second name
        _register(managed_owner, patients, name="again")
    assert managed_owner.workspace is not None
    files = sorted(p.name for p in (managed_owner.workspace.home / "datasets").rglob("*.veil"))
    assert files == ["v1.parquet.veil"]
    objects = Vault.inspect(managed_owner.workspace).objects
    assert [o.object_id for o in objects] == [managed_owner.versions("patients")[0].object_id]


# ---------------------------------------------------------------- new versions


def _without_first_person(catalog: Catalog) -> pd.DataFrame:
    frame = catalog.load_frame("patients")
    return frame.loc[frame["patient_id"] != "p3"].reset_index(drop=True)


def test_replace_version_then_load_gives_the_new_rows_and_the_old_key_is_gone(
    managed_owner: Catalog, patients: Path
):
    _register(managed_owner, patients)
    [old] = managed_owner.versions("patients")
    old_blob = _file(managed_owner, old).read_bytes()
    kept = _without_first_person(managed_owner)
    seen = []
    change = managed_owner.replace_version(
        "patients",
        kept,
        reason="erasure request 17",
        action="dataset.erase",
        on_commit=lambda session, change: seen.append((change.old.version, change.new.version)),
    )
    assert isinstance(change, VersionChange)
    assert seen == [(1, 2)]
    assert change.old.state == "shredded" and change.old.shredded_at is not None
    assert change.new.state == "current" and change.new.n_rows == 58
    frame = managed_owner.load_frame("patients")
    pd.testing.assert_frame_equal(frame, kept)
    assert frame.attrs["veil.version"] == 2
    assert managed_owner.get("patients").n_rows == 58
    assert managed_owner.get("patients").version == 2
    assert not _file(managed_owner, old).exists()
    # A copy of the old ciphertext (a backup) can never be opened again.
    vault = Vault.open(MasterKey.from_env(), managed_owner.workspace)
    with pytest.raises(NotFoundError, match=f"data key {old.object_id} was destroyed"):
        vault.unseal(old_blob, name=old.path)
    with pytest.raises(NotFoundError, match="version 1"):
        managed_owner.load_frame("patients", version=1)
    [erase] = managed_owner.access.trail.entries(action="dataset.erase")
    assert erase.details["from_version"] == 1 and erase.details["to_version"] == 2
    assert erase.details["rows_before"] == 60 and erase.details["rows_after"] == 58
    [shred] = managed_owner.access.trail.entries(action="dataset.shred")
    assert shred.details["version"] == 1 and shred.details["object_id"] == old.object_id
    assert managed_owner.access.trail.verify().ok


def test_a_superseded_version_stays_readable_until_shredded(managed_owner: Catalog, patients: Path):
    _register(managed_owner, patients)
    kept = _without_first_person(managed_owner)
    change = managed_owner.replace_version(
        "patients", kept, reason="r", action="dataset.erase", shred=False
    )
    assert change.old.state == "superseded"
    old_rows = managed_owner.load_frame("patients", version=1)
    assert len(old_rows) == 60 and old_rows.attrs["veil.version"] == 1
    with pytest.raises(ConflictError, match="is current"):
        managed_owner.shred("patients", 2)
    shredded = managed_owner.finish_shredding("patients")
    assert [v.version for v in shredded] == [1]
    assert managed_owner.finish_shredding() == []  # nothing left to do: idempotent
    assert managed_owner.shred("patients", 1).state == "shredded"
    assert [v.state for v in managed_owner.versions("patients")] == ["shredded", "current"]


def test_a_load_whose_version_is_shredded_meanwhile_reads_the_new_one(
    managed_owner: Catalog, patients: Path
):
    _register(managed_owner, patients)
    reader = managed_owner._reader(managed_owner.get("patients"))  # the row is read here
    kept = _without_first_person(managed_owner)
    managed_owner.replace_version("patients", kept, reason="r", action="dataset.erase")
    frame = reader.read()  # version 1 is shredded by now: the load moves to version 2
    assert frame.attrs["veil.version"] == 2
    pd.testing.assert_frame_equal(frame, kept)


def test_a_new_version_with_other_columns_is_refused_and_changes_nothing(
    managed_owner: Catalog, patients: Path
):
    _register(managed_owner, patients)
    frame = managed_owner.load_frame("patients")
    for bad in (frame.drop(columns=["score"]), frame.astype({"age": "float64"})):
        with pytest.raises(InvalidInputError, match="other columns or types"):
            managed_owner.replace_version("patients", bad, reason="r", action="dataset.erase")
    assert [v.version for v in managed_owner.versions("patients")] == [1]
    assert managed_owner.workspace is not None
    assert len(list((managed_owner.workspace.home / "datasets").rglob("*.veil"))) == 1


def test_a_reference_dataset_cannot_get_a_new_version(managed_owner: Catalog, patients: Path):
    managed_owner.add(patients, name="ref", privacy_unit="patient_id", max_rows=2)
    assert managed_owner.get("ref").managed is False
    frame = managed_owner.load_frame("ref")
    with pytest.raises(ConflictError, match="reference dataset") as caught:
        managed_owner.replace_version("ref", frame, reason="r", action="dataset.erase")
    assert "--managed" in caught.value.fix
    assert managed_owner.versions("ref") == []


def test_an_analyst_cannot_replace_a_version_and_the_refusal_is_recorded(
    managed_owner: Catalog, patients: Path
):
    _register(managed_owner, patients)
    managed_owner.access.grant("bob", "analyst", "patients", reason="test")
    store = managed_owner.store
    bob = Catalog(store, access=Access(store, Principal("bob")), workspace=managed_owner.workspace)
    kept = _without_first_person(managed_owner)
    with pytest.raises(PermissionDeniedError, match=r"dataset\.erase"):
        bob.replace_version("patients", kept, reason="r", action="dataset.erase")
    with pytest.raises(PermissionDeniedError):
        bob.finish_shredding("patients")
    with pytest.raises(PermissionDeniedError):
        bob.load_frame("patients", use="mechanism", version=1)  # old versions: owners only
    [refused] = managed_owner.access.trail.entries(action="dataset.erase")
    assert refused.outcome is Outcome.REFUSED and refused.actor == "bob"
    assert [v.version for v in managed_owner.versions("patients")] == [1]
    assert len(managed_owner.load_frame("patients")) == 60


def test_removing_a_managed_dataset_destroys_every_version(managed_owner: Catalog, patients: Path):
    _register(managed_owner, patients)
    managed_owner.replace_version(
        "patients", _without_first_person(managed_owner), reason="r", action="dataset.erase"
    )
    live = managed_owner.current_version("patients")
    assert live is not None and live.version == 2
    blob = _file(managed_owner, live).read_bytes()
    result = managed_owner.remove("patients")
    assert result["archived"] is False
    assert managed_owner.workspace is not None
    assert list((managed_owner.workspace.home / "datasets").rglob("*.veil")) == []
    vault = Vault.open(MasterKey.from_env(), managed_owner.workspace)
    with pytest.raises(NotFoundError, match="destroyed"):
        vault.unseal(blob, name=live.path)
    with managed_owner.store.session() as session:
        assert session.scalars(select(DatasetVersionRow)).all() == []
    [entry] = managed_owner.access.trail.entries(action="dataset.remove")
    assert entry.details["destroyed_versions"] == [2]


def test_destroy_versions_leaves_the_registration_without_data(
    managed_owner: Catalog, patients: Path
):
    _register(managed_owner, patients)
    destroyed = managed_owner.destroy_versions(
        "patients", reason="expired", action="retention.apply"
    )
    assert [(v.version, v.state) for v in destroyed] == [(1, "shredded")]
    assert managed_owner.current_version("patients") is None
    with pytest.raises(NotFoundError, match="no data left"):
        managed_owner.load_frame("patients")


def test_a_consent_filtered_load_of_a_managed_dataset_keeps_its_version(
    managed_owner: Catalog, patients: Path
):
    from veil.data import Consent

    _register(managed_owner, patients)
    consent = Consent(managed_owner)
    consent.enable("patients", default="granted")
    consent.record("patients", "p3", "statistics", "withdrawn")
    frame = managed_owner.load_frame("patients", ["age"], purpose="statistics")
    assert len(frame) == 58 and list(frame.columns) == ["age"]
    assert frame.attrs["veil.version"] == 1
    assert frame.attrs["veil.consent"]["rows_excluded"] == 2


def test_update_re_declares_a_managed_dataset_from_its_current_version(
    managed_owner: Catalog, patients: Path
):
    _register(managed_owner, patients)
    managed_owner.replace_version(
        "patients", _without_first_person(managed_owner), reason="r", action="dataset.erase"
    )
    patients.unlink()  # the registered file is not needed: the sealed version is checked
    info = managed_owner.update("patients", bounds={"age": (0, 120)})
    assert info.n_rows == 58 and info.managed and info.version == 2
    assert info.schema.column("age").bounds == (0.0, 120.0)


def test_an_archived_managed_dataset_is_shredded_and_rejoins_with_a_new_version(
    managed_owner: Catalog, patients: Path
):
    from veil.ledger import Budget, Ledger

    _register(managed_owner, patients)
    Ledger(managed_owner.store, access=managed_owner.access).set_budget(
        "patients", Budget(epsilon=1.0)
    )
    result = managed_owner.remove("patients")
    assert result["archived"] is True and result["destroyed_versions"] == [1]
    assert managed_owner.workspace is not None
    assert list((managed_owner.workspace.home / "datasets").rglob("*.veil")) == []
    [shred] = managed_owner.access.trail.entries(action="dataset.shred")
    assert shred.details["version"] == 1
    # The same bytes registered again rejoin the ledger, as version 2 of the same dataset.
    info = _register(managed_owner, patients)
    assert info.report["rejoined"]["name"] == "patients"
    assert info.version == 2
    assert [v.state for v in managed_owner.versions("patients")] == ["shredded", "current"]
    assert len(managed_owner.load_frame("patients")) == 60
