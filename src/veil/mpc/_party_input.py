"""A party's own input, read in the party's own process: a CSV column or a ``.npy`` file.

The runner hands each party only the path of its input; the party reads it
here, refusing a missing file, a missing column, gaps and text with the fix.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError, NotFoundError

__all__ = ["load_input", "read_column"]


def read_column(path: Path, column: str | None) -> npt.NDArray[np.float64]:
    """The numbers of one CSV column (a header row is required), refusing gaps and text."""
    if not path.is_file():
        raise NotFoundError(
            f"input file {path} does not exist",
            expected="a CSV file with a header row",
            got=f"no file at {path}",
            fix="check the path of this party's input",
        )
    with path.open(newline="", encoding="utf-8") as stream:
        rows = csv.reader(stream)
        header = next(rows, None)
        if not header:
            raise InvalidInputError(
                f"{path.name} is empty",
                expected="a header row and one row per value",
                got="an empty file",
                fix="write the values with a header, for example 'cost'",
            )
        if column is None:
            if len(header) != 1:
                raise InvalidInputError(
                    f"{path.name} has several columns and none was chosen",
                    expected="--column NAME",
                    got=f"columns {header}",
                    fix=f"pass --column with one of {header}",
                )
            index = 0
        elif column in header:
            index = header.index(column)
        else:
            raise InvalidInputError(
                f"{path.name} has no column {column!r}",
                expected=f"one of {header}",
                got=repr(column),
                fix="pass --column with a column of every input file",
            )
        values = []
        for line, row in enumerate(rows, start=2):
            cell = row[index].strip() if index < len(row) else ""
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                raise InvalidInputError(
                    f"{path.name} line {line}: {header[index]!r} is not a number",
                    expected="a number in every row",
                    got=repr(cell),
                    fix="clean the column, or choose a numeric one with --column",
                ) from None
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        first = int(np.flatnonzero(~np.isfinite(array))[0]) + 2
        raise InvalidInputError(
            f"{path.name}: {header[index]!r} has missing or non-finite values",
            expected="a finite number in every row",
            got=f"an empty, NaN or infinite value at line {first}",
            fix="drop or impute the missing values before the secure computation",
        )
    return array


def load_input(spec: dict[str, Any] | None, party: int) -> npt.NDArray[np.float64] | None:
    if spec is None:
        return None
    if "demo" in spec:  # demo values, drawn in this party's process (documented as not private)
        rng = np.random.default_rng([int(spec["seed"]), party])
        return rng.uniform(0.0, 100.0, size=int(spec["demo"])).round(2)
    path = Path(spec["path"])
    if path.suffix == ".npy":
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64).ravel()
    return read_column(path, spec.get("column"))
