"""Datasets and their privacy schema.

Load data in the formats its users already have (CSV, Parquet, the UCI Adult
files, MNIST IDX, scikit-learn's bundled sets), declare who the rows belong to
and what each column may hold (:class:`PrivacySchema`), and register it in the
workspace (:class:`Catalog`).

>>> from veil.data import load_table
>>> frame = load_table("sklearn:diabetes")
>>> frame.shape
(442, 11)
"""

from veil.data._catalog import Catalog, DatasetInfo
from veil.data._idx import read_idx
from veil.data._loaders import load_mnist, load_table
from veil.data._readers import FORMATS, SKLEARN_DATASETS, ImageArrays
from veil.data._schema import (
    ColumnSpec,
    PrivacySchema,
    check_columns_exist,
    parse_bounds,
    parse_categories,
    suggest_bounds,
)

__all__ = [
    "FORMATS",
    "SKLEARN_DATASETS",
    "Catalog",
    "ColumnSpec",
    "DatasetInfo",
    "ImageArrays",
    "PrivacySchema",
    "check_columns_exist",
    "load_mnist",
    "load_table",
    "parse_bounds",
    "parse_categories",
    "read_idx",
    "suggest_bounds",
]
