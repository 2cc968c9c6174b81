"""Datasets and their privacy schema.

Load data in the formats its users already have (CSV, Parquet, the UCI Adult
files, MNIST IDX, scikit-learn's bundled sets), declare who the rows belong to
and what each column may hold (:class:`PrivacySchema`), and register it in the
workspace (:class:`Catalog`). The format readers behind them are the public
submodule :mod:`veil.data.readers`.

A dataset is a *reference* to a file Veil does not own, or, registered with
``managed=True``, a *managed* one: an encrypted copy in the workspace kept as
versions (:class:`DatasetVersion`), which erasure and retention replace
(:class:`VersionChange`) and whose superseded keys are destroyed.

>>> from veil.data import load_table
>>> frame = load_table("sklearn:diabetes")
>>> frame.shape
(442, 11)
"""

from veil.data._catalog import Catalog, DataUse
from veil.data._consent import Consent, ConsentState, ImportReport, Purpose
from veil.data._consent_rule import ConsentSnapshot
from veil.data._dataset_info import DatasetInfo
from veil.data._declare import parse_bounds, parse_categories, read_codebook
from veil.data._idx import read_idx
from veil.data._loaders import load_mnist, load_table
from veil.data._managed import DatasetVersion, VersionChange
from veil.data._persons import canonical_person, person_key, person_token, person_tokens
from veil.data._schema import ColumnSpec, PrivacySchema, check_columns_exist
from veil.data._suggest import suggest_bounds, suggest_categories
from veil.data._versions import reference_refusal

__all__ = [
    "Catalog",
    "ColumnSpec",
    "Consent",
    "ConsentSnapshot",
    "ConsentState",
    "DataUse",
    "DatasetInfo",
    "DatasetVersion",
    "ImportReport",
    "PrivacySchema",
    "Purpose",
    "VersionChange",
    "canonical_person",
    "check_columns_exist",
    "load_mnist",
    "load_table",
    "parse_bounds",
    "parse_categories",
    "person_key",
    "person_token",
    "person_tokens",
    "read_codebook",
    "read_idx",
    "reference_refusal",
    "suggest_bounds",
    "suggest_categories",
]
