"""audit_model on a tabular model: attribute inference and fairness from the registered records."""

from __future__ import annotations

import math

import pytest

from veil.audit import audit_model, render_html
from veil.data import Catalog
from veil.errors import InvalidInputError
from veil.ledger import Budget, Ledger
from veil.store import Store
from veil.train import DPConfig, ModelRegistry, fit_private

pytestmark = [
    pytest.mark.slow,  # a DP model trained on Adult, then audited
    pytest.mark.xdist_group("audit-run"),  # one worker builds the module's fixture, once
]

BOUNDS = {"age": (17.0, 90.0), "hours_per_week": (1.0, 99.0), "education_num": (1.0, 16.0)}


@pytest.fixture(scope="module")
def adult_model(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    store = Store.open(f"sqlite:///{root / 'veil.db'}", upgrade=True)
    catalog = Catalog(store)
    for name, file in (("adult", "adult.data"), ("adult-test", "adult.test")):
        catalog.add(
            shared_data / "adult" / file,
            name=name,
            format="adult",
            bounds=BOUNDS,
            quasi_identifiers=["age", "sex", "race"],
            sensitive=["marital_status"],
        )
    ledger = Ledger(store)
    ledger.set_budget("adult", Budget(epsilon=2.0, delta=1e-5))
    registry = ModelRegistry(root / "models")
    config = DPConfig(epochs=1, batch_size=512, epsilon=1.0, delta=1e-5)
    features = [
        "age",
        "hours_per_week",
        "education_num",
        "sex",
        "race",
        "marital_status",
        "workclass",
    ]
    fit_private(
        catalog,
        ledger,
        registry,
        "adult",
        config,
        name="adult-dp",
        model="logreg",
        features=features,
    )
    yield catalog, registry
    store.dispose()


def test_tabular_audit_infers_the_sensitive_column_and_measures_fairness(adult_model):
    catalog, registry = adult_model
    report = audit_model(
        catalog,
        registry,
        "adult-dp",
        test="adult-test",
        attacks=("attribute", "fairness"),
        max_points=3000,
    )
    assert report.attribute is not None and report.attribute.attribute == "marital_status"
    # Marital status is largely predictable from the rest: the baseline is well above the majority.
    assert report.attribute.baseline_accuracy_members > report.attribute.majority_accuracy - 0.05
    assert report.fairness is not None and report.fairness.attribute == "marital_status"
    assert 0 <= report.fairness.demographic_parity_difference <= 1
    assert set(report.fairness.by_group) <= set(
        catalog.get("adult").schema.column("marital_status").categories
    )
    assert math.isclose(report.claimed_epsilon, report.card["epsilon"])
    levels = {v.attack: v.level for v in report.verdicts()}
    assert set(levels) == {"attribute", "fairness", "utility"}
    # Every audit measures utility: held-out accuracy against always predicting the majority.
    assert report.utility is not None and report.utility["rows"] == 3000
    assert report.utility["majority_class"] == "<=50K"
    assert levels["utility"] == ("pass" if report.utility["useful"] else "warn")
    for group in report.fairness.by_group.values():
        assert group["count"] >= 1 and group["too_small"] == (group["count"] < 30)
    html = render_html(report)
    assert "Attribute inference" in html and "fairlearn" in html
    assert "95% CI" in html


def test_a_chosen_attribute_must_be_a_categorical_feature(adult_model):
    catalog, registry = adult_model
    report = audit_model(
        catalog,
        registry,
        "adult-dp",
        test="adult-test",
        attacks=("fairness",),
        attribute="sex",
        max_points=500,
    )
    assert report.fairness is not None and set(report.fairness.by_group) == {"Female", "Male"}
    with pytest.raises(InvalidInputError, match="not a categorical feature"):
        audit_model(
            catalog, registry, "adult-dp", test="adult-test", attacks=("fairness",), attribute="age"
        )
    with pytest.raises(InvalidInputError, match="max-points"):
        audit_model(catalog, registry, "adult-dp", test="adult-test", max_points=3)
