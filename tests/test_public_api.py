"""Each package's public names are pinned: a name that appears or disappears must be noticed."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "veil": ["VeilError", "Workspace", "__version__"],
    "veil.errors": [
        "BudgetExceededError",
        "ConflictError",
        "DataTooLargeError",
        "InvalidInputError",
        "MissingDependencyError",
        "NotFoundError",
        "PermissionDeniedError",
        "PrivacyLeakWarning",
        "SchemaError",
        "StoreError",
        "StoreVersionError",
        "VeilError",
        "require",
    ],
    "veil.workspace": ["Settings", "Workspace"],
    "veil.progress": ["ProgressCallback", "ProgressEvent"],
    "veil.store": ["Base", "DatasetRow", "Store", "head_revision"],
    "veil.data": [
        "FORMATS",
        "SKLEARN_DATASETS",
        "Catalog",
        "ColumnSpec",
        "DatasetInfo",
        "ImageArrays",
        "PrivacySchema",
        "load_mnist",
        "load_table",
        "parse_bounds",
        "parse_categories",
        "read_idx",
        "suggest_bounds",
    ],
    "veil.cli": ["main"],
    "veil.ledger": [
        "Budget",
        "BudgetStatus",
        "DiscreteGaussianDpEvent",
        "EpsilonDeltaDpEvent",
        "Ledger",
        "LedgerEntry",
        "Mechanism",
        "PLDAccountant",
        "PrivacyEvent",
        "RDPAccountant",
        "Receipt",
        "check_delta",
        "check_epsilon",
        "check_positive",
        "check_probability",
        "check_rho",
        "event_from_dict",
        "event_to_dict",
        "gaussian_epsilon",
        "pure_epsilon",
        "zcdp_rho",
    ],
    "veil.dp": [
        "AboveThreshold",
        "Aggregate",
        "Contribution",
        "FrequencyEstimate",
        "FrequencyOracle",
        "GaussianMechanism",
        "LaplaceMechanism",
        "PrivateFrame",
        "QueryPlan",
        "QueryResult",
        "QuerySpec",
        "RandomizedResponse",
        "SUPPORTED_SQL",
        "exponential_mechanism",
        "gaussian_sigma",
        "laplace_half_width",
        "parse_sql",
        "plan_query",
        "query_dataset",
        "run_plan",
    ],
    # Filled by later issues; empty until then.
    "veil.anonymize": [],
    "veil.train": [],
    "veil.federated": [],
    "veil.crypto": [],
    "veil.audit": [],
    "veil.serve": [],
    "veil.governance": [],
    "veil.bench": ["run_query_benchmark"],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_public_names_are_pinned(module_name):
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(PUBLIC[module_name])
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names {name}, which does not exist"
