"""Training when consent leaves nobody: refused in words that name the consent rule, nothing charged."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil.access import Access, Principal
from veil.data import Catalog, Consent
from veil.errors import InvalidInputError
from veil.ledger import Budget, Ledger
from veil.train import DPConfig, ModelRegistry, fit_private, fit_sisa

CONFIG = DPConfig(epochs=1, batch_size=10, epsilon=2.0, delta=1e-3, learning_rate=0.5)


@pytest.fixture
def nobody_consented(store, workspace, tmp_path: Path):
    """`patients` under opt-in consent management: two persons withdrew, nobody granted."""
    del workspace  # the persons key
    path = tmp_path / "patients.csv"
    rows = [f"p{i},{20 + i},{'yes' if i % 2 else 'no'}" for i in range(40)]
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
    consent.enable("patients")  # opt-in: no record means no
    consent.record("patients", "p0", "model-training", "withdrawn", source="email")
    return catalog, ledger, ModelRegistry(tmp_path / "models")


@pytest.mark.parametrize("sisa", [False, True])
def test_training_with_nobody_consenting_says_so_and_charges_nothing(nobody_consented, sisa):
    # It once stopped with "no training examples" (single) or "--shards <= 0" (SISA).
    catalog, ledger, registry = nobody_consented
    fit = fit_sisa if sisa else fit_private
    extra = {"shards": 2, "slices": 1} if sisa else {}
    with pytest.raises(InvalidInputError, match="consent for 'model-training'") as refused:
        fit(
            catalog, ledger, registry, "patients", CONFIG, name="m", model="logreg",
            label="sick", purpose="model-training: readmission", **extra,
        )  # fmt: skip
    assert "'withdrawn'" in refused.value.got
    assert "veil consent set patients" in refused.value.fix
    assert ledger.entries("patients") == []
    assert registry.list() == []
