"""unlearn_and_verify and `veil unlearn` on a real SISA ensemble in a real workspace.

The ensemble is trained on a registered CSV with a privacy unit (persons
named by token), with a registered held-out set (the non-members). The
forgetting check's numbers are not asserted here (tests/governance/
test_unlearning_check.py checks their statistics): these tests check what
happens around them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from veil.errors import ConflictError
from veil.governance._lineage import read_members
from veil.store.tables import DatasetRow, ErasureRow, TrailEntryRow

torch = pytest.importorskip("torch")

PEOPLE, TEST_PEOPLE = 160, 80


def _people(path: Path, n: int, offset: int, seed: int) -> Path:
    rng = np.random.default_rng(seed + offset)
    x = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "pid": [f"P-{offset + i:04d}" for i in range(n)],
            "x": np.round(np.clip(x, -3, 3), 3),
            "age": rng.integers(18, 90, size=n),
            "outcome": np.where(x + rng.normal(scale=0.5, size=n) > 0, "yes", "no"),
        }
    )
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def ensemble(tmp_path: Path, cli: Callable[..., Any], seed: int) -> Iterator[dict[str, Any]]:
    """A workspace with `people` (train), `people-test` and the SISA ensemble `m` (2 x 2)."""
    from veil.data import Catalog
    from veil.ledger import Budget, Ledger
    from veil.train import DPConfig, ModelRegistry, fit_sisa
    from veil.workspace import Workspace

    assert cli("init")[0] == 0
    catalog = Catalog.open()
    declared: dict[str, Any] = {
        "privacy_unit": "pid",
        "bounds": {"x": (-3.0, 3.0), "age": (0.0, 120.0)},
        "categories": {"outcome": ("no", "yes")},
    }
    train_csv = _people(tmp_path / "people.csv", PEOPLE, 0, seed)
    catalog.add(train_csv, name="people", **declared)
    catalog.add(
        _people(tmp_path / "test.csv", TEST_PEOPLE, PEOPLE, seed), name="people-test", **declared
    )
    ledger = Ledger(catalog.store, catalog.settings, access=catalog.access)
    ledger.set_budget("people-test", Budget(epsilon=1.0, delta=0.0), reason="test accuracy")
    registry = ModelRegistry.for_workspace(Workspace.locate())
    config = DPConfig(epochs=2, batch_size=16, private=False, sampling="shuffle")
    fit_sisa(
        catalog,
        ledger,
        registry,
        "people",
        config,
        name="m",
        shards=2,
        slices=2,
        hidden=(8,),
        label="outcome",
        features=["x", "age"],
        test="people-test",
        purpose="model-training",
    )
    yield {
        "catalog": catalog,
        "ledger": ledger,
        "registry": registry,
        "frame": pd.read_csv(train_csv),
    }
    catalog.store.dispose()


def _tokens(ctx: dict[str, Any], pids: list[str]) -> set[str]:
    from veil.data import person_tokens

    info = ctx["catalog"].get("people")
    return set(person_tokens(ctx["registry"].person_key(), info.dataset_id, pids))


def _trail(ctx: dict[str, Any], action: str) -> list[dict[str, Any]]:
    with ctx["catalog"].store.session() as session:
        bodies = session.scalars(
            select(TrailEntryRow.body).where(TrailEntryRow.action == action)
        ).all()
    return [json.loads(b) for b in bodies]


@pytest.mark.slow
def test_unlearn_and_verify_removes_the_people_and_reports_before_and_after(
    ensemble: dict[str, Any],
) -> None:
    from veil.governance import unlearn_and_verify

    ctx = ensemble
    folder = ctx["registry"].path("m")
    gone = _tokens(ctx, ["P-0003", "P-0010", "P-0042", "P-0077", "P-0100"])
    before = read_members(folder)
    assert before is not None
    assert gone <= before
    report = unlearn_and_verify(
        ctx["catalog"],
        ctx["ledger"],
        ctx["registry"],
        "m",
        erased_frame=ctx["frame"],
        erased_tokens=gone,
        purpose="erasure: test",
        references=2,
    )
    members = read_members(folder)
    assert members is not None
    assert not gone & members
    assert len(members) == PEOPLE - len(gone)
    assert report.erased_people == len(gone)
    assert report.unlearning["persons_removed"] == len(gone)
    check = report.verification
    assert check is not None, report.not_verified
    assert check.erased_people == len(gone) and check.erased_rows == len(gone)
    assert check.non_members == TEST_PEOPLE
    for side in (check.before, check.after):
        assert side.auc is not None and side.auc_ci95 is not None
        assert 0.0 <= side.auc <= 1.0
        assert 0.0 <= side.percentile <= 100.0
    body = report.to_dict()
    assert body["verification"]["run"] is True
    assert body["verdict"] == check.verdict
    # The model's audit report holds the run in its "unlearning" section.
    saved = json.loads((folder / "audit-report.json").read_text())
    assert [r["verification"]["run"] for r in saved["unlearning"]] == [True]
    assert "<h2>Unlearning</h2>" in (folder / "audit-report.html").read_text()
    (entry,) = _trail(ctx, "model.unlearn.verify")
    assert entry["details"]["erased_people"] == len(gone)
    assert entry["details"]["verification"]["after"]["auc"] == check.after.auc
    assert "P-0003" not in json.dumps(entry)  # tokens and numbers only


@pytest.mark.slow
def test_one_person_gets_a_percentile_and_a_second_run_keeps_the_first(
    ensemble: dict[str, Any],
) -> None:
    from veil.governance import unlearn_and_verify

    ctx = ensemble
    args = (ctx["catalog"], ctx["ledger"], ctx["registry"], "m")
    first = unlearn_and_verify(
        *args,
        erased_frame=ctx["frame"],
        erased_tokens=_tokens(ctx, ["P-0005"]),
        purpose="erasure: one",
        references=2,
    )
    assert first.verification is not None
    assert first.verification.after.auc is None  # one person: no AUC
    assert any("not meaningful" in n for n in first.verification.notes)
    # Nothing left to unlearn for that person: nothing retrained, nothing added to the report.
    again = unlearn_and_verify(
        *args, erased_tokens=_tokens(ctx, ["P-0005"]), purpose="erasure: again"
    )
    assert again.erased_people == 0
    assert again.unlearning == {}
    saved = json.loads((ctx["registry"].path("m") / "audit-report.json").read_text())
    assert len(saved["unlearning"]) == 1


@pytest.mark.slow
def test_without_readable_rows_verification_is_not_run(ensemble: dict[str, Any]) -> None:
    from veil.governance import unlearn_and_verify

    ctx = ensemble
    gone = _tokens(ctx, ["P-0007", "P-0008"])
    report = unlearn_and_verify(
        ctx["catalog"],
        ctx["ledger"],
        ctx["registry"],
        "m",
        erased_tokens=gone,
        purpose="erasure: late",
    )
    assert report.verification is None
    assert report.not_verified is not None
    assert "reference dataset" in report.not_verified  # no earlier version is kept
    assert report.verdict.startswith("not verified")
    members = read_members(ctx["registry"].path("m"))
    assert members is not None and not gone & members  # unlearned all the same
    (entry,) = _trail(ctx, "model.unlearn.verify")
    assert entry["details"]["verification"] == {"run": False, "why": report.not_verified}


@pytest.mark.slow
def test_cli_unlearn_json(ensemble: dict[str, Any], cli: Callable[..., Any]) -> None:
    ctx = ensemble
    (token,) = _tokens(ctx, ["P-0011"])
    with ctx["catalog"].store.session() as session:  # the record `veil erase` leaves
        dataset_id = session.scalar(select(DatasetRow.id).where(DatasetRow.name == "people"))
        session.add(
            ErasureRow(
                dataset_id=dataset_id,
                kind="erase",
                person=token,
                reason="test",
                from_version=1,
                to_version=2,
                rows_removed=1,
                actor="test",
            )
        )
    code, out, err = cli("unlearn", "m", "--json")
    assert code == 0, err
    body = json.loads(out)
    assert body["model"] == "m"
    assert body["erased_people"] == 1
    assert body["unlearning"]["persons_removed"] == 1
    assert body["verification"]["run"] is False
    assert body["verdict"].startswith("not verified")
    code, out, err = cli("unlearn", "m", "--json")
    assert code == 0, err
    assert json.loads(out)["erased_people"] == 0


def test_a_model_that_is_not_sisa_is_refused(ensemble: dict[str, Any]) -> None:
    from veil.governance import unlearn_and_verify
    from veil.train import DPConfig, fit_private

    ctx = ensemble
    config = DPConfig(epochs=1, batch_size=16, private=False, sampling="shuffle")
    fit_private(
        ctx["catalog"],
        ctx["ledger"],
        ctx["registry"],
        "people",
        config,
        name="single",
        hidden=(4,),
        label="outcome",
        features=["x", "age"],
    )
    with pytest.raises(ConflictError, match="not a SISA ensemble"):
        unlearn_and_verify(
            ctx["catalog"], ctx["ledger"], ctx["registry"], "single", purpose="erasure: x"
        )
