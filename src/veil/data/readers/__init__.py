"""Readers for the formats Veil registers: CSV, Parquet, UCI Adult, MNIST IDX, scikit-learn sets.

A reader opens one source and offers three things: its column names and the
facts its *format* declares (the Adult codebook's categories, MNIST's pixel
range), a stream of chunks (so a file larger than memory can still be
validated at registration), and a whole-table read for analysis, which is
refused up front when the estimated size would not fit in memory.

A public submodule for Veil's own packages (training and federated learning
read a registered dataset through the catalogue's reader, so that the
fingerprint is the one the registration recorded; the benchmarks use the
Adult codebook), and for users who add a format. Users who only load data
call :func:`veil.data.load_table` and :class:`veil.data.Catalog`.

One module per format (``_csv`` for CSV and Adult, ``_parquet``, ``_sklearn``,
``_mnist``), the interface and shared checks in ``_base``, the choice of
reader in ``_open``; this package re-exports them.
"""

from veil.data._adult import ADULT_CATEGORIES, ADULT_COLUMNS
from veil.data.readers._base import (
    Declaration,
    ImageArrays,
    Reader,
)
from veil.data.readers._base import available_memory_bytes as available_memory_bytes
from veil.data.readers._base import check_fits_in_memory as check_fits_in_memory
from veil.data.readers._csv import AdultReader as AdultReader
from veil.data.readers._csv import CsvReader as CsvReader
from veil.data.readers._mnist import MnistReader as MnistReader
from veil.data.readers._open import FORMATS, guess_format, open_reader
from veil.data.readers._parquet import ParquetReader as ParquetReader
from veil.data.readers._sklearn import SKLEARN_DATASETS, SKLEARN_TARGETS
from veil.data.readers._sklearn import SKLEARN_SPLITS as SKLEARN_SPLITS
from veil.data.readers._sklearn import SKLEARN_TEST_SHARE as SKLEARN_TEST_SHARE
from veil.data.readers._sklearn import SklearnReader as SklearnReader
from veil.data.readers._sklearn import sklearn_split_rows as sklearn_split_rows

# Beyond __all__, the readers themselves and their helpers stay importable from here (the
# "as" names): the catalogue, the loaders and a user adding a format reach them.
__all__ = [
    "ADULT_CATEGORIES",
    "ADULT_COLUMNS",
    "FORMATS",
    "SKLEARN_DATASETS",
    "SKLEARN_TARGETS",
    "Declaration",
    "ImageArrays",
    "Reader",
    "guess_format",
    "open_reader",
]
