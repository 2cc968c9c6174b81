"""Loading data without a workspace: the same readers the catalogue uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from veil.data.readers import ImageArrays, MnistReader, check_fits_in_memory, open_reader

__all__ = ["load_mnist", "load_table"]


def load_table(
    source: str | Path,
    format: str | None = None,  # noqa: A002 - the user-facing word
    *,
    max_load_bytes: int | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Read a table (CSV, Parquet, UCI Adult, ``sklearn:NAME``) into a data frame.

    Args:
        source: File path or ``sklearn:NAME``.
        format: Format name; guessed from ``source`` when omitted.
        max_load_bytes: Refuse files whose estimated in-memory size exceeds
            this (default: half the available memory).
        **options: ``delimiter=``, ``encoding=`` for text formats.

    Raises:
        DataTooLargeError: Before reading anything, if the data would not fit.
    """
    reader = open_reader(str(source), format, **options)
    # Without registration statistics the estimate uses the file size alone.
    check_fits_in_memory(reader.estimate_memory(0, 1, None), max_load_bytes, str(source))
    return reader.read()


def load_mnist(directory: str | Path, split: str = "train") -> ImageArrays:
    """Read MNIST's original IDX files (gzipped or not) from ``directory``."""
    return MnistReader(Path(directory), split=split).arrays()
