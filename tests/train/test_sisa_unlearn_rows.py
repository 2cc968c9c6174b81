"""Unlearning reads only the retrained shards' rows, and trains exactly what the full data would.

Unlearning applies the model's fixed front end and indexes tensors for the
rows of the shards it retrains only (a speed-up: ScatterNet features of every
MNIST image were most of an unlearning run). The check: with a seeded
(reproducible) run, the retrained shard's checkpoints equal those of the
shard's stages re-run by hand over the *whole* table's tensors, the way every
row was read before.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.train.test_sisa import PLAIN, _adult, _register

from veil.data import Catalog, person_key, person_tokens
from veil.ledger import Budget, Ledger
from veil.store import Store
from veil.train import (
    FeatureEncoder,
    ModelRegistry,
    assign_persons,
    dataset_tensors,
    fit_sisa,
    shard_checkpoint,
    shard_members,
    unlearn_sisa,
)
from veil.train._ensemble import SisaSchedule, load_state
from veil.train._models import build_model, fixed_features
from veil.train._sisa import ShardRun, shard_model, train_shard
from veil.workspace import Workspace

SEEDED = replace(PLAIN, seed=11)


def _weights(path: Path, meta: dict, shard: int, stage: int) -> dict[str, torch.Tensor]:
    net = build_model(meta["spec"])
    load_state(net, shard_checkpoint(path, shard, stage))
    return net.state_dict()


# A seeded run is reproducible, hence not private: the warning says so; expected here.
@pytest.mark.filterwarnings("ignore::veil.errors.PrivacyLeakWarning")
def test_retrained_shard_equals_its_stages_rerun_over_the_whole_table(tmp_path, shared_data):
    workspace = Workspace.create(tmp_path / ".veil")
    store = Store.open(f"sqlite:///{workspace.home / 'veil.db'}", upgrade=True)
    try:
        catalog = Catalog(store)
        _register(catalog, _adult(shared_data, 400), tmp_path / "adult.csv", "adult")
        ledger = Ledger(store)
        ledger.set_budget("adult", Budget(epsilon=10.0, delta=1e-5))
        registry = ModelRegistry.for_workspace(workspace)
        fit_sisa(
            catalog, ledger, registry, "adult", SEEDED, name="sisa", shards=3, slices=3,
            hidden=(8,), label="income", epochs_per_slice=1,
        )  # fmt: skip
        path = registry.path("sisa")
        meta = registry.meta("sisa")
        # A person of slice 2 of shard 1: stages 2 and 3 of that shard are re-run.
        target = shard_members(path, 1, 3)[1][0]
        result = unlearn_sisa(catalog, ledger, registry, "sisa", [target])
        assert result.shards_retrained == (1,) and result.slices_retrained == ((2, 3),)

        # By hand, over every row of the table: the rows of shard 1 without the person.
        data = dataset_tensors(
            catalog, "adult", label="income", encoder=FeatureEncoder.from_dict(meta["encoder"])
        )
        info = catalog.get("adult")
        tokens = np.asarray(person_tokens(person_key(workspace), info.dataset_id, data.persons))
        shard_of, slice_of = assign_persons(tokens.tolist(), 3, 3)
        keep = tokens != target
        rows = [np.flatnonzero((shard_of == 1) & (slice_of == j) & keep) for j in range(3)]
        assert sum(r.size for r in rows) < data.inputs.shape[0] / 2  # the shard is a part
        schedule = SisaSchedule.from_dict(meta["sisa"])
        net = shard_model(path, meta, 1, 1)  # checkpoint 1 was kept (hard-linked)
        _, inputs = fixed_features(net, data.inputs)
        expected = train_shard(
            net, ShardRun(1, 2, rows), inputs, data.targets, SEEDED, schedule,
            n_classes=int(meta["spec"]["n_classes"]),
        )  # fmt: skip
        assert sorted(expected) == [2, 3]
        for stage in (2, 3):
            reference = build_model(meta["spec"])
            reference.load_state_dict(torch.load(io.BytesIO(expected[stage])))
            got = _weights(path, meta, 1, stage)
            for key, value in reference.state_dict().items():
                assert torch.equal(got[key], value), (stage, key)
        # Sanity: the re-run changed the shard (the person's rows are gone).
        other = _weights(path, meta, 1, 3)
        assert any(not torch.equal(other[k], v) for k, v in _weights(path, meta, 1, 1).items())
    finally:
        store.dispose()


def test_assign_persons_only_some_shards_gives_the_same_slices_there():
    tokens = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(500)]
    tokens.append("abc123")  # not 32 hex characters: the other path
    shard, slice_ = assign_persons(tokens, 5, 4)
    some_shard, some_slice = assign_persons(tokens, 5, 4, only={1, 3})
    assert (some_shard == shard).all()
    inside = np.isin(shard, [1, 3])
    assert inside.any() and (~inside).any()
    assert (some_slice[inside] == slice_[inside]).all()
    assert (some_slice[~inside] == -1).all()
    # A person's rows (a token repeated) all go to the person's shard and slice.
    again_shard, again_slice = assign_persons([*tokens, *tokens[:50]], 5, 4)
    assert (again_shard[-50:] == shard[:50]).all() and (again_slice[-50:] == slice_[:50]).all()
