"""Erasure and unlearning together, on a managed dataset: verified while the old rows exist.

`veil erase` unlearns every SISA model carrying the person *before* the old
version's key is destroyed, so the membership test can read their rows; after
an erasure with --no-unlearn the rows are shredded, and `veil unlearn` says
that verification did not run rather than guessing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from veil.governance._lineage import read_members
from veil.store.tables import TrailEntryRow

torch = pytest.importorskip("torch")


@pytest.fixture
def sisa(managed: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """SISA ensemble `m` (2 x 2) on the managed `visits`; `held-out` is its test set."""
    import pandas as pd

    from veil.data import Catalog
    from veil.ledger import Budget, Ledger
    from veil.train import DPConfig, ModelRegistry, fit_sisa
    from veil.workspace import Workspace

    catalog = Catalog.open()
    held_out = tmp_path / "held-out.csv"
    pd.DataFrame(
        {
            "pid": [f"Q-{i:03d}" for i in range(40)],
            "age": [20 + (7 * i) % 60 for i in range(40)],
            "outcome": ["yes" if i % 3 == 0 else "no" for i in range(40)],
        }
    ).to_csv(held_out, index=False)
    catalog.add(
        held_out,
        name="held-out",
        privacy_unit="pid",
        bounds={"age": (0.0, 120.0)},
        categories={"outcome": ("no", "yes")},
    )
    ledger = Ledger(catalog.store, catalog.settings, access=catalog.access)
    ledger.set_budget("held-out", Budget(epsilon=1.0, delta=0.0), reason="test accuracy")
    registry = ModelRegistry.for_workspace(Workspace.locate())
    fit_sisa(
        catalog,
        ledger,
        registry,
        managed,
        DPConfig(epochs=2, batch_size=8, private=False, sampling="shuffle"),
        name="m",
        shards=2,
        slices=2,
        hidden=(4,),
        label="outcome",
        features=["age"],
        test="held-out",
        purpose="model-training",
    )
    yield {"catalog": catalog, "ledger": ledger, "registry": registry}
    catalog.store.dispose()


def _verifications(catalog: Any) -> list[dict[str, Any]]:
    with catalog.store.session() as session:
        bodies = session.scalars(
            select(TrailEntryRow.body).where(TrailEntryRow.action == "model.unlearn.verify")
        ).all()
    return [json.loads(b)["details"]["verification"] for b in bodies]


@pytest.mark.slow
def test_erase_unlearns_and_verifies_before_shredding(sisa: dict[str, Any]) -> None:
    from veil.governance import erase

    ctx = sisa
    folder = ctx["registry"].path("m")
    before = read_members(folder)
    assert before is not None and len(before) == 30
    report = erase(
        ctx["catalog"],
        "visits",
        "P-0003",
        reason="art. 17 request",
        registry=ctx["registry"],
        ledger=ctx["ledger"],
    )
    assert report.shredded
    (result,) = report.unlearning
    assert result["ok"] is True, result
    assert result["erased_people"] == 1
    assert result["verification"]["run"] is True  # the old rows were still readable
    assert result["verification"]["erased_rows"] == 2  # two visits of one person
    assert result["verification"]["before"]["auc"] is None  # one person: a percentile
    assert 0.0 <= result["verification"]["after"]["percentile"] <= 100.0
    after = read_members(folder)
    assert after is not None
    assert len(after) == 29 and report.person not in after
    assert [v["run"] for v in _verifications(ctx["catalog"])] == [True]
    audit = json.loads((folder / "audit-report.json").read_text())
    assert audit["unlearning"][0]["verification"]["run"] is True


@pytest.mark.slow
def test_after_shredding_unlearn_says_verification_was_not_run(
    sisa: dict[str, Any], cli: Callable[..., tuple[int, str, str]]
) -> None:
    code, _, err = cli(
        "erase", "visits", "--person", "P-0004", "--reason", "request", "--no-unlearn"
    )
    assert code == 0, err
    code, out, err = cli("unlearn", "m", "--json")
    assert code == 0, err
    body = json.loads(out)
    assert body["erased_people"] == 1
    assert body["unlearning"]["persons_removed"] == 1
    assert body["verification"]["run"] is False
    assert "no longer readable" in body["verification"]["why"]
    assert "shredded" in body["verification"]["why"]
    assert body["verdict"].startswith("not verified")
    members = read_members(sisa["registry"].path("m"))
    assert members is not None and len(members) == 29
    code, out, err = cli("unlearn", "m")
    assert code == 0, err
    assert "nothing to unlearn" in out
