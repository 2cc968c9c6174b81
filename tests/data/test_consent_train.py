"""DP training on a dataset under consent management: only consenting people, the snapshot on the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil.access import Access, Principal
from veil.data import Catalog, Consent
from veil.errors import InvalidInputError
from veil.ledger import Budget, Ledger
from veil.train import DPConfig, ModelRegistry, fit_private, fit_sisa

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

N = 40
CONFIG = DPConfig(epochs=1, batch_size=10, epsilon=2.0, delta=1e-3, learning_rate=0.5)


@pytest.fixture
def setup(store, workspace, tmp_path: Path):
    del workspace  # the persons key
    path = tmp_path / "patients.csv"
    rows = [f"p{i},{20 + i},{'yes' if i % 2 else 'no'}" for i in range(N)]
    path.write_text("pid,age,sick\n" + "\n".join(rows) + "\n", encoding="utf-8")
    catalog = Catalog(store, access=Access(store, Principal("alice")))
    catalog.add(
        path,
        name="patients",
        privacy_unit="pid",
        bounds={"age": (0, 120)},
        categories={"sick": ("no", "yes")},
    )
    ledger = Ledger(store, access=catalog.access)
    ledger.set_budget("patients", Budget(epsilon=10.0, delta=1e-2))
    consent = Consent(catalog)
    consent.enable("patients")
    for i in range(30):
        consent.record("patients", f"p{i}", "model-training", "granted", source="form")
    consent.record("patients", "p0", "model-training", "withdrawn", source="email")
    return catalog, ledger, ModelRegistry(tmp_path / "models")


def test_training_sees_only_consenting_people_and_the_ledger_says_so(setup):
    catalog, ledger, registry = setup
    trained = fit_private(
        catalog, ledger, registry, "patients", CONFIG, name="m", model="logreg",
        label="sick", purpose="model-training: readmission risk",
    )  # fmt: skip
    assert trained.card.examples == 29  # p1..p29: p0 withdrew, p30..p39 never consented
    [entry] = ledger.entries("patients")
    consent = entry.details["consent"]
    assert consent["purpose"] == "model-training"
    assert (consent["persons_excluded"], consent["rows_excluded"]) == (11, 11)
    assert consent["through_record"] == 31 and consent["default"] == "withdrawn"
    assert catalog.access.trail.verify().ok


def test_training_for_an_undeclared_purpose_is_refused_before_the_charge(setup):
    catalog, ledger, registry = setup
    with pytest.raises(InvalidInputError, match="under consent management"):
        fit_private(
            catalog, ledger, registry, "patients", CONFIG, name="m", model="logreg",
            label="sick", purpose="model training",
        )  # fmt: skip
    assert ledger.entries("patients") == []
    assert registry.list() == []


def test_a_sisa_ensemble_records_the_consent_snapshot(setup):
    catalog, ledger, registry = setup
    fit_sisa(
        catalog, ledger, registry, "patients", CONFIG, name="s", shards=2, slices=1,
        model="logreg", label="sick", purpose="model-training",
    )  # fmt: skip
    [entry] = ledger.entries("patients")
    assert entry.details["consent"]["persons_excluded"] == 11
    assert entry.details["sisa"]["shards"] == 2
