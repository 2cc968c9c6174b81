"""Lineage: derived artefacts, membership lists, and the erased people a model still carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil.governance import carried_erasures, derived_artifacts, record_artifact
from veil.governance._lineage import MEMBERS_FILE, model_kind, read_members
from veil.store.tables import DatasetRow, ErasureRow

torch = pytest.importorskip("torch")

T = [f"{i:032x}" for i in range(1, 8)]  # person tokens (32 hex characters)


def _dataset(store, name: str = "visits") -> int:
    with store.session() as session:
        row = DatasetRow(
            name=name,
            format="csv",
            source=f"/data/{name}.csv",
            content_sha256="0" * 64,
            size_bytes=1,
            n_rows=10,
            n_columns=2,
            privacy_schema={"columns": [], "privacy_unit": "pid"},
            load_options={},
            registration_report={},
            created_by="alice",
            veil_version="0",
        )
        session.add(row)
        session.flush()
        return row.id


def _model(tmp_path: Path, name: str, *, private: bool, members: list[str] | None, sisa=False):
    from veil.train import ModelRegistry, PrivacyCard

    registry = ModelRegistry(tmp_path / "models")
    fields: dict = dict.fromkeys(PrivacyCard.__dataclass_fields__)
    fields.update(
        model=name,
        dataset="visits",
        dataset_sha256="0" * 64,
        created_at="2026-01-01T00:00:00",
        private=private,
        epsilon=1.0 if private else float("inf"),
        delta=1e-5,
        accountant="pld",
        neighbouring="add or remove one pid",
        sampling="poisson",
        sample_rate=0.1,
        expected_batch_size=10,
        steps=1,
        epochs=1,
        examples=10,
        secure_rng=True,
        architecture="logreg",
        veil_version="0",
    )
    meta = {"spec": {"kind": "logreg"}, **({"sisa": {"shards": 2}} if sisa else {})}
    registry.save(name, torch.nn.Linear(2, 2), meta, PrivacyCard(**fields))
    if members is not None:
        (registry.root / name / MEMBERS_FILE).write_text("".join(f"{t}\n" for t in members))
    return registry


def _erase(store, dataset_id: int, token: str | None, *, version: int, rows: int = 1) -> None:
    with store.session() as session:
        session.add(
            ErasureRow(
                dataset_id=dataset_id,
                kind="erase" if token else "retention",
                person=token,
                reason="test",
                from_version=version,
                to_version=version + 1,
                rows_removed=rows,
                actor="alice",
            )
        )


def test_a_model_carries_exactly_the_erased_people_in_its_membership_list(catalog, tmp_path):
    dataset_id = _dataset(catalog.store)
    registry = _model(tmp_path, "m", private=False, members=sorted(T[:4]))
    with catalog.store.session() as session:
        record_artifact(
            catalog.access, session, kind="model", name="m", dataset_id=dataset_id, version=1
        )
    report = carried_erasures(catalog, registry, "m")
    assert report.erased_people == 0
    assert report.advice.startswith("nothing to do")
    assert "carries no erased person" in report.summary()
    _erase(catalog.store, dataset_id, T[0], version=1)  # a member
    _erase(catalog.store, dataset_id, T[5], version=2)  # never in the model
    _erase(catalog.store, dataset_id, T[1], version=3)  # a member
    _erase(catalog.store, dataset_id, None, version=0, rows=50)  # retention before the model
    _erase(catalog.store, dataset_id, None, version=3, rows=7)  # retention after
    report = carried_erasures(catalog, registry, "m")
    assert report.erased_people == 2
    assert report.members_known
    assert report.rows_removed_by_retention_since == 7
    assert report.kind == "non-private"
    assert report.advice == "non-private model: retrain or retire"
    assert report.summary().startswith("carries 2 erased people and 7 rows removed by retention")


def test_advice_follows_the_kind_of_model(catalog, tmp_path):
    dataset_id = _dataset(catalog.store)
    _erase(catalog.store, dataset_id, T[0], version=1)
    for name, private, sisa, advice in (
        ("dp", True, False, "DP model: its guarantee protects the person"),
        ("ens", False, True, "SISA: run veil unlearn ens"),
    ):
        registry = _model(tmp_path, name, private=private, members=[T[0]], sisa=sisa)
        assert carried_erasures(catalog, registry, name).advice.startswith(advice)


def test_a_model_without_a_membership_list_counts_every_erasure_since_as_an_upper_bound(
    catalog, tmp_path
):
    dataset_id = _dataset(catalog.store)
    registry = _model(tmp_path, "old", private=True, members=None)
    with catalog.store.session() as session:
        record_artifact(
            catalog.access, session, kind="model", name="old", dataset_id=dataset_id, version=2
        )
    _erase(catalog.store, dataset_id, T[0], version=1)  # before the model's version
    _erase(catalog.store, dataset_id, T[1], version=2)
    _erase(catalog.store, dataset_id, T[2], version=3)
    report = carried_erasures(catalog, registry, "old")
    assert (report.erased_people, report.members_known) == (2, False)
    assert "up to 2 erased people" in report.summary()


def test_derived_artifacts_lists_what_was_made_from_a_dataset(catalog):
    first, second = _dataset(catalog.store, "a"), _dataset(catalog.store, "b")
    with catalog.store.session() as session:
        for kind, name, dataset_id in (
            ("model", "m1", first),
            ("anonymized", "/out/a.csv", first),
            ("model", "m2", second),
        ):
            record_artifact(
                catalog.access, session, kind=kind, name=name, dataset_id=dataset_id, version=1
            )
    assert [(a.kind, a.name) for a in derived_artifacts(catalog, "a")] == [
        ("model", "m1"),
        ("anonymized", "/out/a.csv"),
    ]
    assert [a.name for a in derived_artifacts(catalog, "a", kinds=["anonymized"])] == ["/out/a.csv"]


def test_an_unknown_artefact_kind_is_refused(catalog):
    from veil.errors import InvalidInputError

    dataset_id = _dataset(catalog.store)
    with (
        pytest.raises(InvalidInputError, match="unknown derived artefact kind"),
        catalog.store.session() as session,
    ):
        record_artifact(
            catalog.access, session, kind="csv", name="x", dataset_id=dataset_id, version=1
        )


def test_membership_files_take_the_last_field_of_each_line(tmp_path):
    (tmp_path / MEMBERS_FILE).write_text(
        f"# shard slice token\n0 1 {T[0]}\n\n{T[1]}\nnot-a-token\n"
    )
    assert read_members(tmp_path) == {T[0], T[1]}
    assert read_members(tmp_path / "missing") is None
    assert model_kind(tmp_path, {"private": True}) == "dp"
    assert model_kind(tmp_path, {"private": False, "sisa": {"shards": 3}}) == "sisa"
