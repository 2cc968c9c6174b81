"""SISA ensembles: training, the files on disk, unlearning one shard, the DP charge, lineage.

Data: the first rows of the real UCI Adult file (../shared/data), with a person
id column added and registered as a CSV with ``pid`` as its privacy unit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sqlalchemy import select

from veil.data import Catalog, person_key, person_tokens
from veil.errors import InvalidInputError
from veil.ledger import Budget, Ledger
from veil.store import Store
from veil.store.tables import DerivedArtifactRow, ErasureRow
from veil.train import (
    DPConfig,
    ModelRegistry,
    SisaEnsemble,
    account,
    assign_persons,
    dataset_tensors,
    fit_private,
    fit_sisa,
    shard_checkpoint,
    shard_members,
    unlearn_sisa,
)
from veil.workspace import Workspace

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
]  # fmt: skip
RELATIONSHIPS = ["Husband", "Not-in-family", "Other-relative", "Own-child", "Unmarried", "Wife"]
KEEP = ["pid", "age", "education-num", "hours-per-week", "sex", "relationship", "income"]
PLAIN = DPConfig(
    epochs=4, batch_size=32, learning_rate=0.05, optimizer="adam", private=False, sampling="shuffle"
)


def _adult(shared_data: Path, rows: int, offset: int = 0) -> pd.DataFrame:
    frame = pd.read_csv(
        shared_data / "adult" / "adult.data",
        names=COLUMNS,
        skipinitialspace=True,
        nrows=offset + rows,
    ).iloc[offset:]
    frame.insert(0, "pid", np.arange(10_000 + offset, 10_000 + offset + len(frame)))
    return frame[KEEP]


def _register(catalog: Catalog, frame: pd.DataFrame, path: Path, name: str) -> None:
    frame.to_csv(path, index=False)
    catalog.add(
        path,
        name=name,
        privacy_unit="pid",
        bounds={"age": (17, 90), "education-num": (1, 16), "hours-per-week": (1, 99)},
        categories={
            "sex": ["Male", "Female"],
            "relationship": RELATIONSHIPS,
            "income": ["<=50K", ">50K"],
        },
    )


@pytest.fixture
def setup(tmp_path, shared_data):
    workspace = Workspace.create(tmp_path / ".veil")
    store = Store.open(f"sqlite:///{workspace.home / 'veil.db'}", upgrade=True)
    catalog = Catalog(store)
    _register(catalog, _adult(shared_data, 600), tmp_path / "adult.csv", "adult")
    _register(catalog, _adult(shared_data, 600, offset=600), tmp_path / "held.csv", "held")
    ledger = Ledger(store)
    ledger.set_budget("adult", Budget(epsilon=10.0, delta=1e-5))
    yield catalog, ledger, ModelRegistry.for_workspace(workspace), workspace
    store.dispose()


def _digests(path: Path, shards: int, slices: int) -> dict[tuple[int, int], str]:
    return {
        (i, j): hashlib.sha256(shard_checkpoint(path, i, j).read_bytes()).hexdigest()
        for i in range(shards)
        for j in range(slices + 1)
    }


def _tokens(workspace: Workspace, catalog: Catalog, name: str) -> list[str]:
    frame = pd.read_csv(catalog.get(name).source)
    return person_tokens(person_key(workspace), catalog.get(name).dataset_id, frame["pid"])


def test_assignment_is_a_function_of_the_token_alone():
    tokens = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(2000)]
    shard, slice_ = assign_persons(tokens, 7, 3)
    assert (shard == np.array([int(t, 16) % 7 for t in tokens])).all()
    again, again_slice = assign_persons(tokens[::-1], 7, 3)  # order does not matter
    assert (again[::-1] == shard).all() and (again_slice[::-1] == slice_).all()
    # Both hashes spread: every (shard, slice) cell holds persons; the slice is not the shard.
    assert len(set(zip(shard.tolist(), slice_.tolist(), strict=True))) == 21


@pytest.mark.slow  # trains six stages with Adam: about 6 s
def test_ensemble_trains_saves_and_loads_with_its_members(setup):
    catalog, ledger, registry, workspace = setup
    trained = fit_sisa(
        catalog, ledger, registry, "adult", PLAIN, name="sisa", shards=3, slices=2,
        hidden=(16,), label="income",
    )  # fmt: skip
    saved = registry.load("sisa")
    assert isinstance(saved.model, SisaEnsemble) and len(saved.model.members) == 3
    held = dataset_tensors(catalog, "held", label="income", encoder=trained_encoder(saved))
    with torch.no_grad():
        log_p = saved.model(held.inputs)
        assert torch.allclose(log_p, trained.model(held.inputs), atol=1e-6)
    # The output is the log of the mean of the shards' probabilities.
    probs = torch.stack([torch.softmax(m(held.inputs), 1) for m in saved.model.members]).mean(0)
    assert torch.allclose(log_p.exp(), probs, atol=1e-5)
    accuracy = float((log_p.argmax(1) == held.targets).float().mean())
    majority = float(torch.bincount(held.targets).max()) / len(held.targets)
    assert accuracy >= majority + 0.02, (accuracy, majority)
    # Files: each shard's checkpoints 0..R and persons per slice; members.tokens is them all.
    tokens = sorted(set(_tokens(workspace, catalog, "adult")))
    assert registry.members("sisa") == tokens
    per_slice = [shard_members(saved.path, i, 2) for i in range(3)]
    assert sorted(t for shard in per_slice for s in shard for t in s) == tokens
    assert all(shard_checkpoint(saved.path, i, j).is_file() for i in range(3) for j in range(3))
    card = saved.card
    assert card.sisa is not None and card.sisa["shards"] == 3 and card.sisa["slices"] == 2
    assert card.sisa["epochs_per_slice"] == 3  # round(2 * 4 / 3): SISA's schedule
    assert any(label == "SISA ensemble" for label, _ in card.lines())
    assert ledger.entries("adult")[0].to_dict()["details"]["sisa"]["shards"] == 3
    with catalog.store.session() as session:
        (row,) = session.scalars(select(DerivedArtifactRow)).all()
    assert (row.kind, row.name, row.version) == ("model", "sisa", None)
    assert row.dataset_id == catalog.get("adult").dataset_id
    saves = catalog.access.trail.entries(action="model.save")
    assert saves[-1].to_dict()["links"]["model"] == "sisa"


def trained_encoder(saved):
    from veil.train import FeatureEncoder

    return FeatureEncoder.from_dict(saved.meta["encoder"])


def test_unlearning_retrains_only_the_shard_that_held_the_person(setup):
    catalog, ledger, registry, _ = setup
    fit_sisa(
        catalog, ledger, registry, "adult", PLAIN, name="sisa", shards=4, slices=3,
        hidden=(8,), label="income", epochs_per_slice=1,
    )  # fmt: skip
    path = registry.path("sisa")
    before = _digests(path, 4, 3)
    # A person of the last slice of shard 2: only that shard's last stage is re-run.
    target = shard_members(path, 2, 3)[2][0]
    result = unlearn_sisa(catalog, ledger, registry, "sisa", [target])
    after = _digests(path, 4, 3)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {(2, 3)}
    assert result.shards_retrained == (2,) and result.slices_retrained == ((3,),)
    assert result.persons_removed == 1 and result.receipt is None and result.generation == 2
    assert target not in registry.members("sisa")
    assert all(target not in s for i in range(4) for s in shard_members(path, i, 3))
    assert len(registry.members("sisa")) == 599
    # Only the retrained shard got a new folder; the old one is gone.
    folders = sorted(p.name for p in (path / "shards").iterdir() if ".g" in p.name)
    assert folders == ["s0.g1", "s1.g1", "s2.g2", "s3.g1"]
    entry = catalog.access.trail.entries(action="model.unlearn")[-1].to_dict()
    assert entry["details"]["tokens"] == [target] and entry["details"]["shards"] == [2]
    assert entry["links"]["model"] == "sisa"
    history = ledger.entries("adult")
    assert "unlearning" in history[-1].to_dict()["what"]
    # Again: nothing left to remove, nothing retrained or recorded.
    again = unlearn_sisa(catalog, ledger, registry, "sisa", [target])
    assert again.shards_retrained == () and _digests(path, 4, 3) == after
    assert len(ledger.entries("adult")) == len(history)
    registry.load("sisa")  # still loads
    # A crash after the shard swap but before members.tokens: the list still names the person.
    # The next run has nothing to retrain (no shard holds them) and rewrites the list.
    stale = sorted([*registry.members("sisa"), target])
    (path / "members.tokens").write_text("".join(f"{t}\n" for t in stale))
    healed = unlearn_sisa(catalog, ledger, registry, "sisa", [target])
    assert healed.shards_retrained == () and target not in registry.members("sisa")


def test_unlearning_defaults_to_the_erased_persons_of_the_dataset(setup):
    catalog, ledger, registry, _ = setup
    fit_sisa(
        catalog, ledger, registry, "adult", PLAIN, name="sisa", shards=2, slices=2,
        hidden=(8,), label="income", epochs_per_slice=1,
    )  # fmt: skip
    path = registry.path("sisa")
    target = shard_members(path, 1, 2)[0][0]  # slice 1 of shard 1: both of its stages re-run
    before = _digests(path, 2, 2)
    with catalog.store.session() as session:
        session.add(
            ErasureRow(
                dataset_id=catalog.get("adult").dataset_id,
                kind="erase",
                person=target,
                reason="test",
                from_version=1,
                to_version=2,
                rows_removed=1,
                actor="test",
            )
        )
    result = unlearn_sisa(catalog, ledger, registry, "sisa")
    changed = {k for k, v in _digests(path, 2, 2).items() if v != before[k]}
    assert changed == {(1, 1), (1, 2)}
    assert result.slices_retrained == ((1, 2),) and result.persons_removed == 1
    assert target not in registry.members("sisa")


@pytest.mark.slow  # three accountants and DP-SGD stages: about 10 s
def test_dp_ensemble_is_charged_one_shards_epsilon_and_unlearning_is_charged(setup):
    catalog, ledger, registry, _ = setup
    config = DPConfig(epochs=2, batch_size=50, epsilon=2.0, delta=1e-5, learning_rate=0.5)
    trained = fit_sisa(
        catalog, ledger, registry, "adult", config, name="dp", shards=3, slices=2,
        hidden=(8,), label="income",
    )  # fmt: skip
    (event,) = ledger.entries("adult")
    data = event.to_dict()
    (mechanism,) = data["mechanisms"]
    q = 50 * 3 / 600
    steps = 2 * 1 * round(1 / q)  # R stages x round(2 E / (R + 1)) epochs x 1/q steps
    assert mechanism["parameters"]["sampling_rate"] == pytest.approx(q)
    assert mechanism["parameters"]["steps"] == steps
    assert "parallel composition over 3 disjoint shards" in data["details"]["sisa"]["composition"]
    sigma = mechanism["parameters"]["noise_multiplier"]
    one_shard = account(q, sigma, steps, 1e-5)
    card = trained.card
    assert event.epsilon == pytest.approx(one_shard.epsilon, rel=1e-9) and card.epsilon <= 2.0
    assert card.epsilon == pytest.approx(event.epsilon, rel=1e-9)
    # Cross-check: RDP never tighter; Opacus's PRV close to PLD.
    assert one_shard.epsilon_rdp >= one_shard.epsilon - 2e-3
    assert one_shard.epsilon_prv is not None
    assert one_shard.epsilon_prv == pytest.approx(one_shard.epsilon, rel=0.05, abs=0.02)
    # Unlearning a person of slice 2 re-runs one stage of one shard: half the steps, charged first.
    path = registry.path("dp")
    target = shard_members(path, 0, 2)[1][0]
    result = unlearn_sisa(catalog, ledger, registry, "dp", [target])
    assert result.receipt is not None
    second = ledger.entries("adult")[-1]
    assert second.id == result.receipt.event_id
    assert second.to_dict()["mechanisms"][0]["parameters"]["steps"] == steps // 2
    assert second.epsilon == pytest.approx(account(q, sigma, steps // 2, 1e-5).epsilon, rel=1e-9)
    assert ledger.status("adult").spent.epsilon > event.epsilon  # budgets are never refunded


def test_refusals_spend_and_save_nothing(setup):
    catalog, ledger, registry, _ = setup
    for shards, slices in ((0, 1), (1, 0), (2.5, 1)):
        with pytest.raises(InvalidInputError):
            fit_sisa(
                catalog, ledger, registry, "adult", PLAIN, name="x", shards=shards,
                slices=slices, label="income",
            )  # fmt: skip
    with pytest.raises(InvalidInputError, match="more shards than persons"):
        fit_sisa(
            catalog, ledger, registry, "adult", PLAIN, name="x", shards=601, slices=1,
            label="income",
        )  # fmt: skip
    assert ledger.entries("adult") == [] and registry.list() == []
    fit_private(catalog, ledger, registry, "adult", PLAIN, name="single", label="income")
    with pytest.raises(InvalidInputError, match="not a SISA ensemble"):
        unlearn_sisa(catalog, ledger, registry, "single", [])


def test_single_models_record_members_or_say_they_are_not_tracked(setup):
    catalog, ledger, registry, workspace = setup
    trained = fit_private(
        catalog, ledger, registry, "adult", PLAIN, name="single", label="income", hidden=(8,)
    )
    assert registry.members("single") == sorted(set(_tokens(workspace, catalog, "adult")))
    assert trained.card.membership.startswith("tracked: 600 persons")
    # No privacy unit: nobody to name.
    catalog.add("sklearn:iris", name="iris", bounds={"sepal length (cm)": (0.0, 10.0)})
    plain = fit_private(catalog, ledger, registry, "iris", PLAIN, name="iris-model", model="logreg")
    assert registry.members("iris-model") is None
    assert plain.card.membership == "membership not tracked: no privacy unit"
    on_disk = json.loads((registry.path("iris-model") / "privacy_card.json").read_text())
    assert on_disk["membership"] == plain.card.membership and "dataset_version" in on_disk
    with catalog.store.session() as session:
        names = sorted(r.name for r in session.scalars(select(DerivedArtifactRow)).all())
    assert names == ["iris-model", "single"]


def test_the_loaded_ensemble_goes_through_the_audits_membership_code(setup):
    from veil.audit import as_classifier, membership_inference, veil_trainer

    catalog, ledger, registry, _ = setup
    fit_sisa(
        catalog, ledger, registry, "adult", PLAIN, name="sisa", shards=2, slices=2,
        hidden=(8,), label="income", epochs_per_slice=1,
    )  # fmt: skip
    saved = registry.load("sisa")
    encoder = trained_encoder(saved)
    members = dataset_tensors(catalog, "adult", label="income", encoder=encoder)
    others = dataset_tensors(catalog, "held", label="income", encoder=encoder)
    x = torch.cat([members.inputs[:100], others.inputs[:100]]).numpy()
    y = torch.cat([members.targets[:100], others.targets[:100]]).numpy().astype(np.int64)
    is_member = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    (result,), _ = membership_inference(
        as_classifier(saved.model), x, y, is_member, attacks=("threshold",)
    )
    assert 0.0 <= result.auc <= 1.0
    # The audit's reference trainer rebuilds one shard's architecture from the ensemble's files.
    fit = veil_trainer(saved.meta, saved.card.to_dict())
    reference = fit(x[:50], y[:50], 0)
    assert reference.log_proba(x[:5]).shape == (5, 2)
